use crate::{Result, StorageError};

/// Checks that `key` is a relative path that stays inside its store.
///
/// Rejects empty keys, absolute paths, backslashes, NUL bytes, and `.`, `..`
/// or empty segments, so that names taken from a checkpoint can never
/// address a file outside it.
pub fn validate_key(key: &str) -> Result<()> {
    let trimmed = key.strip_suffix('/').unwrap_or(key);
    let invalid = trimmed.is_empty()
        || trimmed.starts_with('/')
        || trimmed.contains('\\')
        || trimmed.contains('\0')
        || trimmed
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..");
    if invalid {
        return Err(StorageError::InvalidKey {
            key: key.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_keys_are_valid() {
        assert!(validate_key("a").is_ok());
        assert!(validate_key("params.dense.kernel/0.1").is_ok());
        assert!(validate_key("d/").is_ok());
    }

    #[test]
    fn escaping_keys_are_rejected() {
        for key in ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a\\b", "a\0"] {
            assert!(
                matches!(validate_key(key), Err(StorageError::InvalidKey { .. })),
                "{key:?} was accepted"
            );
        }
    }
}
