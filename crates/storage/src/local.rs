use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    ops::Range,
    path::{Path, PathBuf},
};

use bytes::Bytes;

use crate::{validate_key, Backend, Capabilities, Result, StorageError};

/// Suffix of the files TensorStore writes before renaming them over a key.
/// A crashed TensorStore writer leaves them behind, so listings skip them.
const TENSORSTORE_LOCK_SUFFIX: &str = ".__lock";

/// Suffix of the temporary files that [`LocalBackend::put`] renames over a key.
const PUT_TEMP_SUFFIX: &str = ".__ckpt-tmp";

/// A backend over a directory of the local filesystem, with blocking `std::fs` calls.
///
/// Each key is a file below the root directory. Writes go to a temporary
/// file in the key's directory that is then renamed over the key, so
/// readers see the old value or the new one, never a partial file. By
/// default every write and rename is flushed to disk with `fsync` before the
/// call returns; [`LocalBackend::with_fsync`] turns that off.
#[derive(Debug)]
pub struct LocalBackend {
    root: PathBuf,
    url: String,
    fsync: bool,
}

impl LocalBackend {
    /// Opens the directory `root` as a backend, creating it and its parents when missing.
    ///
    /// The root is made absolute and symbolic links in it are resolved, so
    /// the backend's URL and [`Backend::local_root`] name the real directory.
    pub fn new(root: impl AsRef<Path>) -> Result<LocalBackend> {
        let requested = root.as_ref();
        let display = requested.display().to_string();
        let io_error = |operation, source| StorageError::Io {
            operation,
            store: display.clone(),
            key: String::new(),
            source: Box::new(source),
        };
        fs::create_dir_all(requested).map_err(|source| io_error("create directory", source))?;
        let root =
            fs::canonicalize(requested).map_err(|source| io_error("resolve path", source))?;
        let url = url::Url::from_directory_path(&root)
            .map(|url| url.as_str().trim_end_matches('/').to_owned())
            .unwrap_or_else(|()| root.display().to_string());
        Ok(LocalBackend {
            root,
            url,
            fsync: true,
        })
    }

    /// Sets whether writes and renames are flushed to disk with `fsync` before they return.
    ///
    /// Without it a completed save can be lost or left partial by a power
    /// failure, though never by a crash of this process alone.
    pub fn with_fsync(mut self, fsync: bool) -> LocalBackend {
        self.fsync = fsync;
        self
    }

    /// Returns the path of `key`, after checking that the key stays inside the root.
    fn path_of(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key.trim_end_matches('/')))
    }

    /// Returns the directory of `prefix`: the root for `""`, otherwise a checked subdirectory.
    fn dir_of(&self, prefix: &str) -> Result<PathBuf> {
        if prefix.is_empty() {
            Ok(self.root.clone())
        } else {
            self.path_of(prefix)
        }
    }

    fn io_error(&self, operation: &'static str, key: &str, source: io::Error) -> StorageError {
        StorageError::Io {
            operation,
            store: self.url.clone(),
            key: key.to_owned(),
            source: Box::new(source),
        }
    }

    fn create_parent(&self, path: &Path, key: &str) -> Result<()> {
        let Some(parent) = path.parent() else {
            return Ok(());
        };
        fs::create_dir_all(parent).map_err(|source| self.io_error("create directory", key, source))
    }

    /// Flushes the entry list of `dir`, which makes a rename into it durable.
    fn sync_dir(&self, dir: &Path, key: &str) -> Result<()> {
        if !self.fsync {
            return Ok(());
        }
        sync_directory(dir).map_err(|source| self.io_error("sync directory", key, source))
    }

    /// Writes `value` to a new file at `path`, failing if it exists.
    fn write_new_file(&self, path: &Path, value: &[u8]) -> io::Result<()> {
        let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
        file.write_all(value)?;
        if self.fsync {
            file.sync_all()?;
        }
        Ok(())
    }
}

/// Checks whether an error means that no file exists at the path because
/// it is missing, is a directory, or lies below a path component that is a file.
fn is_absent(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory
    )
}

#[cfg(unix)]
fn sync_directory(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

// NOTE: only Unix can open a directory to flush it; elsewhere renames are
// not made durable.
#[cfg(not(unix))]
fn sync_directory(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_exact_at(mut file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

/// Checks whether a file name belongs to a temporary file of a writer rather than a key.
fn is_temporary(name: &str) -> bool {
    name.ends_with(TENSORSTORE_LOCK_SUFFIX) || name.ends_with(PUT_TEMP_SUFFIX)
}

/// Returns the prefix as it starts keys below it: empty or ending in `/`.
fn key_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}/")
    }
}

impl Backend for LocalBackend {
    fn url(&self) -> String {
        self.url.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            atomic_rename: true,
            create_only_put: true,
        }
    }

    fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let path = self.path_of(key)?;
        match fs::read(&path) {
            Ok(data) => Ok(Some(Bytes::from(data))),
            Err(error) if is_absent(&error) => Ok(None),
            Err(error) => Err(self.io_error("read", key, error)),
        }
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Option<Bytes>> {
        let path = self.path_of(key)?;
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if is_absent(&error) => return Ok(None),
            Err(error) => return Err(self.io_error("read", key, error)),
        };
        let metadata = file
            .metadata()
            .map_err(|error| self.io_error("read", key, error))?;
        if !metadata.is_file() {
            return Ok(None);
        }

        let size = metadata.len();
        let invalid_range = || StorageError::InvalidRange {
            store: self.url.clone(),
            key: key.to_owned(),
            start: range.start,
            end: range.end,
            size,
        };
        if range.start > range.end || range.end > size {
            return Err(invalid_range());
        }
        let len = usize::try_from(range.end - range.start).map_err(|_| invalid_range())?;

        let mut buf = vec![0u8; len];
        read_exact_at(&file, &mut buf, range.start)
            .map_err(|error| self.io_error("read", key, error))?;
        Ok(Some(Bytes::from(buf)))
    }

    fn put(&self, key: &str, value: Bytes) -> Result<()> {
        let path = self.path_of(key)?;
        self.create_parent(&path, key)?;
        let Some(file_name) = path.file_name().and_then(|name| name.to_str()) else {
            return Err(StorageError::InvalidKey {
                key: key.to_owned(),
            });
        };
        let temp = path.with_file_name(format!(
            "{file_name}.{}{PUT_TEMP_SUFFIX}",
            uuid::Uuid::new_v4().simple()
        ));

        let written = self
            .write_new_file(&temp, &value)
            .and_then(|()| fs::rename(&temp, &path));
        if let Err(error) = written {
            // The temporary file is garbage whether or not it was written;
            // a failure to remove it changes nothing for the caller.
            let _ = fs::remove_file(&temp);
            return Err(self.io_error("write", key, error));
        }
        match path.parent() {
            Some(parent) => self.sync_dir(parent, key),
            None => Ok(()),
        }
    }

    fn put_if_absent(&self, key: &str, value: Bytes) -> Result<()> {
        // NOTE: the file is created under its final name and then filled, so a
        // concurrent reader can see it partly written. Callers use this for
        // small marker files, where only the existence of the key matters.
        let path = self.path_of(key)?;
        self.create_parent(&path, key)?;
        match self.write_new_file(&path, &value) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                Err(StorageError::AlreadyExists {
                    store: self.url.clone(),
                    key: key.to_owned(),
                })
            }
            Err(error) => {
                // Remove a partial file so that a retry is not rejected as a duplicate.
                let _ = fs::remove_file(&path);
                Err(self.io_error("write", key, error))
            }
        }
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path_of(key)?;
        match fs::metadata(&path) {
            Ok(metadata) if metadata.is_file() => Ok(Some(metadata.len())),
            Ok(_) => Ok(None),
            Err(error) if is_absent(&error) => Ok(None),
            Err(error) => Err(self.io_error("stat", key, error)),
        }
    }

    /// Lists every file below `prefix`, skipping temporary files of writers.
    ///
    /// Symbolic links to files are listed. Symbolic links to directories are
    /// not followed, so that a link cycle cannot make the listing endless.
    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let start = self.dir_of(prefix)?;
        let mut keys = Vec::new();
        let mut pending = vec![(start, key_prefix(prefix))];
        while let Some((dir, dir_key)) = pending.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(error) if is_absent(&error) => continue,
                Err(error) => return Err(self.io_error("list", &dir_key, error)),
            };
            for entry in entries {
                let entry = entry.map_err(|error| self.io_error("list", &dir_key, error))?;
                let name =
                    entry_name(&entry).map_err(|error| self.io_error("list", &dir_key, error))?;
                let key = format!("{dir_key}{name}");
                let file_type = entry
                    .file_type()
                    .map_err(|error| self.io_error("list", &key, error))?;
                if file_type.is_dir() {
                    pending.push((entry.path(), format!("{key}/")));
                } else if is_temporary(&name) {
                    continue;
                } else if file_type.is_file()
                    || fs::metadata(entry.path()).is_ok_and(|m| m.is_file())
                {
                    keys.push(key);
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = self.dir_of(prefix)?;
        let dir_key = key_prefix(prefix);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if is_absent(&error) => return Ok(Vec::new()),
            Err(error) => return Err(self.io_error("list", &dir_key, error)),
        };
        let mut dirs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|error| self.io_error("list", &dir_key, error))?;
            let name =
                entry_name(&entry).map_err(|error| self.io_error("list", &dir_key, error))?;
            if fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()) {
                dirs.push(format!("{dir_key}{name}"));
            }
        }
        dirs.sort();
        Ok(dirs)
    }

    fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let dir = self.dir_of(prefix)?;
        if !prefix.is_empty() {
            return match fs::symlink_metadata(&dir) {
                Ok(metadata) if metadata.is_dir() => {
                    fs::remove_dir_all(&dir).map_err(|error| self.io_error("delete", prefix, error))
                }
                Ok(_) => Ok(()),
                Err(error) if is_absent(&error) => Ok(()),
                Err(error) => Err(self.io_error("delete", prefix, error)),
            };
        }

        // The root itself stays: the backend was opened on it.
        let entries = fs::read_dir(&dir).map_err(|error| self.io_error("delete", "", error))?;
        for entry in entries {
            let entry = entry.map_err(|error| self.io_error("delete", "", error))?;
            let path = entry.path();
            let removed = match entry.file_type() {
                Ok(file_type) if file_type.is_dir() => fs::remove_dir_all(&path),
                Ok(_) => fs::remove_file(&path),
                Err(error) => Err(error),
            };
            removed.map_err(|error| self.io_error("delete", &path.display().to_string(), error))?;
        }
        Ok(())
    }

    fn rename_dir(&self, from: &str, to: &str) -> Result<()> {
        let from_path = self.path_of(from)?;
        let to_path = self.path_of(to)?;

        // NOTE: `std::fs::rename` replaces an empty target directory, so the
        // target is checked first. Another process that creates an empty
        // directory at `to` between the check and the rename loses it; a
        // non-empty target makes the rename itself fail.
        match fs::symlink_metadata(&to_path) {
            Ok(_) => {
                return Err(StorageError::AlreadyExists {
                    store: self.url.clone(),
                    key: to.to_owned(),
                })
            }
            Err(error) if is_absent(&error) => {}
            Err(error) => return Err(self.io_error("rename", to, error)),
        }
        match fs::symlink_metadata(&from_path) {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => {
                let error = io::Error::from(io::ErrorKind::NotADirectory);
                return Err(self.io_error("rename", from, error));
            }
            Err(error) if is_absent(&error) => {
                return Err(StorageError::NotFound {
                    store: self.url.clone(),
                    key: from.to_owned(),
                })
            }
            Err(error) => return Err(self.io_error("rename", from, error)),
        }

        self.create_parent(&to_path, to)?;
        fs::rename(&from_path, &to_path).map_err(|error| self.io_error("rename", from, error))?;
        for parent in [to_path.parent(), from_path.parent()].into_iter().flatten() {
            self.sync_dir(parent, to)?;
        }
        Ok(())
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }
}

/// Returns the UTF-8 file name of a directory entry. Other names cannot be keys.
fn entry_name(entry: &fs::DirEntry) -> io::Result<String> {
    entry.file_name().into_string().map_err(|name| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("file name {name:?} is not valid UTF-8, so it cannot be a key"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> (tempfile::TempDir, LocalBackend) {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path()).unwrap().with_fsync(false);
        (dir, backend)
    }

    crate::conformance::backend_tests!(backend);

    #[test]
    fn new_creates_missing_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("a/b");
        let backend = LocalBackend::new(&root).unwrap();
        assert!(root.is_dir());
        assert_eq!(
            backend.local_root(),
            Some(fs::canonicalize(&root).unwrap().as_path())
        );
    }

    #[test]
    fn url_is_file_url() {
        let (dir, backend) = backend();
        let root = fs::canonicalize(dir.path()).unwrap();
        assert_eq!(backend.url(), format!("file://{}", root.display()));
    }

    #[test]
    fn capabilities_allow_rename() {
        let (_dir, backend) = backend();
        let capabilities = backend.capabilities();
        assert!(capabilities.atomic_rename);
        assert!(capabilities.create_only_put);
    }

    #[test]
    fn keys_are_files_under_root() {
        let (dir, backend) = backend();
        backend.put("a/b.txt", Bytes::from_static(b"hi")).unwrap();
        assert_eq!(fs::read(dir.path().join("a/b.txt")).unwrap(), b"hi");
    }

    #[test]
    fn put_leaves_no_temporary_file() {
        let (dir, backend) = backend();
        backend.put("a/b", Bytes::from_static(b"x")).unwrap();
        backend.put("a/b", Bytes::from_static(b"y")).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path().join("a"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["b"]);
    }

    #[test]
    fn put_with_fsync_writes() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path()).unwrap();
        backend.put("a/b", Bytes::from_static(b"x")).unwrap();
        assert_eq!(backend.get("a/b").unwrap(), Some(Bytes::from_static(b"x")));
    }

    #[test]
    fn put_over_directory_fails() {
        let (dir, backend) = backend();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        let err = backend.put("a/b", Bytes::from_static(b"x")).unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::Io {
                    operation: "write",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("a/b"), "{err}");
        let leftovers = fs::read_dir(dir.path().join("a")).unwrap().count();
        assert_eq!(leftovers, 1);
    }

    #[test]
    fn put_below_file_fails() {
        let (_dir, backend) = backend();
        backend.put("a", Bytes::from_static(b"x")).unwrap();
        let err = backend.put("a/b", Bytes::from_static(b"y")).unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::Io {
                    operation: "create directory",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn directory_reads_as_absent() {
        let (dir, backend) = backend();
        fs::create_dir(dir.path().join("d")).unwrap();
        assert_eq!(backend.get("d").unwrap(), None);
        assert_eq!(backend.get_range("d", 0..0).unwrap(), None);
        assert_eq!(backend.size("d").unwrap(), None);
    }

    #[test]
    fn list_skips_writer_temporaries() {
        let (dir, backend) = backend();
        backend.put("a/x", Bytes::from_static(b"1")).unwrap();
        fs::write(dir.path().join("a/manifest.ocdbt.__lock"), b"").unwrap();
        fs::write(dir.path().join("a/y.0123.__ckpt-tmp"), b"").unwrap();
        assert_eq!(backend.list("").unwrap(), ["a/x"]);
    }

    #[test]
    fn list_dirs_includes_empty_directories() {
        let (dir, backend) = backend();
        fs::create_dir_all(dir.path().join("p/empty")).unwrap();
        assert_eq!(backend.list_dirs("p/").unwrap(), ["p/empty"]);
    }

    #[cfg(unix)]
    #[test]
    fn list_does_not_follow_directory_links() {
        let (dir, backend) = backend();
        backend.put("a/x", Bytes::from_static(b"1")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("a/loop")).unwrap();
        assert_eq!(backend.list("").unwrap(), ["a/x"]);
    }

    #[test]
    fn delete_root_keeps_root() {
        let (dir, backend) = backend();
        backend.put("a/x", Bytes::from_static(b"1")).unwrap();
        backend.put("y", Bytes::from_static(b"2")).unwrap();
        backend.delete_prefix("").unwrap();
        assert!(dir.path().is_dir());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn delete_prefix_keeps_file_of_same_name() {
        let (_dir, backend) = backend();
        backend.put("a", Bytes::from_static(b"1")).unwrap();
        backend.delete_prefix("a/").unwrap();
        assert!(backend.get("a").unwrap().is_some());
    }

    #[test]
    fn rename_dir_moves_tree() {
        let (_dir, backend) = backend();
        backend.put("t.tmp/a/x", Bytes::from_static(b"1")).unwrap();
        backend.rename_dir("t.tmp", "deep/t").unwrap();
        assert_eq!(backend.list("").unwrap(), ["deep/t/a/x"]);
    }

    #[test]
    fn rename_dir_rejects_empty_target() {
        let (dir, backend) = backend();
        backend.put("from/x", Bytes::from_static(b"1")).unwrap();
        fs::create_dir(dir.path().join("to")).unwrap();
        let err = backend.rename_dir("from", "to").unwrap_err();
        assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err}");
        assert!(backend.get("from/x").unwrap().is_some());
    }

    #[test]
    fn rename_dir_rejects_missing_source() {
        let (_dir, backend) = backend();
        let err = backend.rename_dir("from", "to").unwrap_err();
        assert!(matches!(err, StorageError::NotFound { .. }), "{err}");
    }

    #[test]
    fn rename_dir_rejects_file_source() {
        let (_dir, backend) = backend();
        backend.put("from", Bytes::from_static(b"1")).unwrap();
        let err = backend.rename_dir("from", "to").unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::Io {
                    operation: "rename",
                    ..
                }
            ),
            "{err}"
        );
    }
}
