//! Data file tables: the prefix-compressed list of files that a manifest or
//! node refers to by index.

use super::{cursor::write_varint, Cursor, OcdbtError};

/// Maximum length of a data file path, transitive part included.
pub const MAX_PATH_LEN: u64 = 65535;

/// A data file named by a table entry, with its path split in two.
///
/// The full path relative to the database directory is `base_path +
/// relative_path`. Nodes read from this file resolve their own tables against
/// `base_path`, which is how a merged database refers to files inside the
/// per-process databases below it. Decoded ids already carry the transitive
/// path of the table they came from at the front of `base_path`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DataFileId {
    /// The directory part, ending in `/` when not empty.
    pub base_path: Vec<u8>,
    /// The rest of the path, such as `d/<32 hex digits>`.
    pub relative_path: Vec<u8>,
}

impl DataFileId {
    /// Returns the path relative to the database directory.
    pub fn full_path(&self) -> Vec<u8> {
        [self.base_path.as_slice(), self.relative_path.as_slice()].concat()
    }
}

/// Decodes a data file table that fills `input` exactly, with paths
/// relative to `transitive_path` (the base path of the file the table is in).
pub fn decode_data_file_table(
    input: &[u8],
    transitive_path: &[u8],
) -> Result<Vec<DataFileId>, OcdbtError> {
    let mut cursor = Cursor::new(input);
    let files = read_data_file_table(&mut cursor, transitive_path)?;
    cursor.finish("data file table")?;
    Ok(files)
}

/// Reads a data file table whose paths are relative to `transitive_path`.
pub(super) fn read_data_file_table(
    cursor: &mut Cursor<'_>,
    transitive_path: &[u8],
) -> Result<Vec<DataFileId>, OcdbtError> {
    // Each file has at least a suffix length and a base length varint.
    let count = cursor.count("data file count", u64::MAX, 2)?;
    let mut prefix_lens = vec![0u64];
    prefix_lens.extend(cursor.varint_column(
        "path_prefix_length",
        count.saturating_sub(1),
        MAX_PATH_LEN,
    )?);
    let suffix_lens = cursor.varint_column("path_suffix_length", count, MAX_PATH_LEN)?;
    let base_lens = cursor.varint_column("base_path_length", count, MAX_PATH_LEN)?;

    let max_path_len = MAX_PATH_LEN.saturating_sub(transitive_path.len() as u64);
    let mut files: Vec<DataFileId> = Vec::with_capacity(count);
    let mut previous_path: Vec<u8> = Vec::new();
    let mut previous_base_len = 0u64;
    for index in 0..count {
        let (prefix_len, suffix_len, base_len) =
            (prefix_lens[index], suffix_lens[index], base_lens[index]);
        let path_len = prefix_len + suffix_len;
        if path_len > max_path_len {
            return Err(OcdbtError::LimitExceeded {
                field: "data file path length",
                value: path_len + transitive_path.len() as u64,
                limit: MAX_PATH_LEN,
            });
        }
        if prefix_len > previous_path.len() as u64 {
            return Err(OcdbtError::PrefixTooLong {
                field: "path_prefix_length",
                index: index as u64,
                prefix_len,
                previous_len: previous_path.len() as u64,
            });
        }
        if base_len > path_len {
            return Err(OcdbtError::InvalidField {
                field: "base_path_length",
                reason: format!("entry {index} has base path length {base_len} above its path length {path_len}"),
            });
        }
        // The format lets a shared prefix reach past a base path only when
        // the base path equals the previous one.
        if prefix_len > previous_base_len.min(base_len) && base_len != previous_base_len {
            return Err(OcdbtError::InvalidField {
                field: "path_prefix_length",
                reason: format!(
                    "entry {index} shares {prefix_len} bytes with the previous path, past a base path that differs from the previous one"
                ),
            });
        }

        let suffix = cursor.take(suffix_len, "path_suffix")?;
        let mut path = previous_path[..prefix_len as usize].to_vec();
        path.extend_from_slice(suffix);
        let (base, relative) = path.split_at(base_len as usize);
        files.push(DataFileId {
            base_path: [transitive_path, base].concat(),
            relative_path: relative.to_vec(),
        });
        previous_path = path;
        previous_base_len = base_len;
    }
    Ok(files)
}

/// Writes a table of `files`, which must be sorted and unique.
///
/// The shared prefix of two paths stops at the end of the base paths unless
/// both base paths are equal, as the format requires.
pub(super) fn write_data_file_table(out: &mut Vec<u8>, files: &[DataFileId]) {
    debug_assert!(files.windows(2).all(|pair| pair[0] < pair[1]));
    write_varint(out, files.len() as u64);
    let prefix_lens: Vec<usize> = files
        .iter()
        .enumerate()
        .map(|(index, file)| match index {
            0 => 0,
            _ => shared_prefix_len(&files[index - 1], file),
        })
        .collect();
    for &prefix_len in &prefix_lens[1.min(files.len())..] {
        write_varint(out, prefix_len as u64);
    }
    for (file, &prefix_len) in files.iter().zip(&prefix_lens) {
        let path_len = file.base_path.len() + file.relative_path.len();
        write_varint(out, (path_len - prefix_len) as u64);
    }
    for file in files {
        write_varint(out, file.base_path.len() as u64);
    }
    for (file, &prefix_len) in files.iter().zip(&prefix_lens) {
        out.extend_from_slice(&file.full_path()[prefix_len..]);
    }
}

fn shared_prefix_len(previous: &DataFileId, current: &DataFileId) -> usize {
    let base_shared = common_prefix_len(&previous.base_path, &current.base_path);
    if previous.base_path == current.base_path {
        base_shared + common_prefix_len(&previous.relative_path, &current.relative_path)
    } else {
        base_shared
    }
}

/// Returns the length of the longest common prefix of two byte strings.
pub(super) fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(base: &str, relative: &str) -> DataFileId {
        DataFileId {
            base_path: base.as_bytes().to_vec(),
            relative_path: relative.as_bytes().to_vec(),
        }
    }

    fn decode(bytes: &[u8], transitive: &[u8]) -> Result<Vec<DataFileId>, OcdbtError> {
        decode_data_file_table(bytes, transitive)
    }

    #[test]
    fn table_round_trips() {
        let files = vec![
            id("", "d/aaa"),
            id("", "d/aab"),
            id("ocdbt.process_0/", "d/aaa"),
            id("ocdbt.process_1/", "d/aaa"),
            id("ocdbt.process_1/", "d/bbb"),
        ];
        let mut bytes = Vec::new();
        write_data_file_table(&mut bytes, &files);
        assert_eq!(decode(&bytes, b"").unwrap(), files);
    }

    #[test]
    fn transitive_path_prepended() {
        let mut bytes = Vec::new();
        write_data_file_table(&mut bytes, &[id("", "d/x")]);
        assert_eq!(
            decode(&bytes, b"ocdbt.process_0/").unwrap(),
            vec![id("ocdbt.process_0/", "d/x")]
        );
    }

    #[test]
    fn empty_table_round_trips() {
        let mut bytes = Vec::new();
        write_data_file_table(&mut bytes, &[]);
        assert_eq!(decode(&bytes, b"").unwrap(), Vec::new());
    }

    #[test]
    fn prefix_past_previous_path_rejected() {
        // Two files, the second claiming 9 bytes shared with a 3-byte path.
        let bytes = [2, 9, 3, 1, 0, 0, b'a', b'b', b'c', b'd'];
        let err = decode(&bytes, b"").unwrap_err();
        assert!(matches!(err, OcdbtError::PrefixTooLong { .. }), "{err}");
    }

    #[test]
    fn base_longer_than_path_rejected() {
        let bytes = [1, 1, 2, b'a'];
        let err = decode(&bytes, b"").unwrap_err();
        assert!(matches!(err, OcdbtError::InvalidField { .. }), "{err}");
    }

    #[test]
    fn missing_suffix_bytes_rejected() {
        let bytes = [1, 5, 0, b'a'];
        let err = decode(&bytes, b"").unwrap_err();
        assert!(matches!(err, OcdbtError::UnexpectedEnd { .. }), "{err}");
    }

    #[test]
    fn long_path_rejected() {
        let mut bytes = Vec::new();
        write_varint(&mut bytes, 1);
        write_varint(&mut bytes, 65530);
        write_varint(&mut bytes, 0);
        bytes.extend(vec![b'a'; 65530]);
        let err = decode(&bytes, &[b't'; 10]).unwrap_err();
        assert!(matches!(err, OcdbtError::LimitExceeded { .. }), "{err}");
    }
}
