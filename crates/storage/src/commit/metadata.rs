use std::{
    collections::BTreeMap,
    io,
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{ser::Formatter, Map, Value};

use crate::{Result, StorageError, Store};

/// Name of the checkpoint-level metadata file inside a checkpoint directory.
pub const CHECKPOINT_METADATA_FILE: &str = "_CHECKPOINT_METADATA";

/// Maximum size in bytes of a `_CHECKPOINT_METADATA` file that [`CheckpointMetadata::read`] accepts.
///
/// Orbax writes about 300 bytes. The rest of the allowance is for
/// user-supplied metrics and custom metadata.
pub const MAX_CHECKPOINT_METADATA_BYTES: u64 = 16 * 1024 * 1024;

/// The checkpoint handlers recorded in `_CHECKPOINT_METADATA`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ItemHandlers {
    /// The fully qualified Python class of the handler of a single-item checkpoint.
    Single(String),
    /// The handler class of each item, by item name, for checkpoints with several items.
    Composite(BTreeMap<String, String>),
}

/// The contents of `_CHECKPOINT_METADATA`, Orbax's checkpoint-level (step) metadata.
///
/// A save writes it when it begins, with [`CheckpointMetadata::init_timestamp_nsecs`],
/// and again at commit with [`CheckpointMetadata::commit_timestamp_nsecs`].
/// Restoring a pytree does not need it. Fields this type does not know are
/// kept in [`CheckpointMetadata::other`] and written back unchanged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// The handler of each item; `None` when no handler has been recorded yet.
    #[serde(default)]
    pub item_handlers: Option<ItemHandlers>,
    /// Metrics of the step, such as a loss, from the caller.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub metrics: Map<String, Value>,
    /// Timings of the save, recorded by the checkpointer.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub performance_metrics: Map<String, Value>,
    /// Time the save began, in nanoseconds since the Unix epoch.
    #[serde(default)]
    pub init_timestamp_nsecs: Option<u64>,
    /// Time the save was committed, in nanoseconds since the Unix epoch;
    /// `None` while the save is in progress.
    #[serde(default)]
    pub commit_timestamp_nsecs: Option<u64>,
    /// Free-form metadata from the caller.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub custom_metadata: Map<String, Value>,
    /// Fields written by other Orbax versions that this type does not model.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl CheckpointMetadata {
    /// Parses a `_CHECKPOINT_METADATA` document; `location` names it in errors.
    pub fn parse(document: &[u8], location: &str) -> Result<CheckpointMetadata> {
        serde_json::from_slice(document).map_err(|error| StorageError::InvalidMetadata {
            key: location.to_owned(),
            reason: format!("not a valid checkpoint metadata document: {error}"),
        })
    }

    /// Serializes the metadata the way Python's `json.dumps` lays it out, as Orbax writes it.
    ///
    /// Fields come in Orbax's order with `", "` and `": "` separators, so a
    /// file Orbax wrote re-encodes to the same bytes. Keys inside maps come
    /// out sorted, and text is UTF-8 where Python escapes non-ASCII characters.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut serializer = serde_json::Serializer::with_formatter(&mut out, PythonJsonFormatter);
        // Maps of JSON values and integers always serialize.
        let _ = self.serialize(&mut serializer);
        out
    }

    /// Reads `_CHECKPOINT_METADATA` from the checkpoint directory `checkpoint`; `Ok(None)` when absent.
    pub fn read(checkpoint: &Store) -> Result<Option<CheckpointMetadata>> {
        let location = format!("{}/{CHECKPOINT_METADATA_FILE}", checkpoint.url());
        let Some(size) = checkpoint.size(CHECKPOINT_METADATA_FILE)? else {
            return Ok(None);
        };
        if size > MAX_CHECKPOINT_METADATA_BYTES {
            return Err(StorageError::InvalidMetadata {
                key: location,
                reason: format!(
                    "the file has {size} bytes, more than the maximum of {MAX_CHECKPOINT_METADATA_BYTES}"
                ),
            });
        }
        match checkpoint.get(CHECKPOINT_METADATA_FILE)? {
            Some(document) => CheckpointMetadata::parse(&document, &location).map(Some),
            None => Ok(None),
        }
    }

    /// Writes `_CHECKPOINT_METADATA` into the checkpoint directory `checkpoint`, replacing it.
    pub fn write(&self, checkpoint: &Store) -> Result<()> {
        checkpoint.put(CHECKPOINT_METADATA_FILE, Bytes::from(self.to_json()))
    }
}

/// Returns the current time in nanoseconds since the Unix epoch, or 0 for a clock set before it.
pub(crate) fn now_nsecs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Reads a JSON object, or `null` as an empty object.
fn null_as_empty<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Map<String, Value>, D::Error> {
    Ok(Option::<Map<String, Value>>::deserialize(deserializer)?.unwrap_or_default())
}

/// Python `json.dumps` layout: `", "` between items and `": "` after keys.
struct PythonJsonFormatter;

impl Formatter for PythonJsonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ObjectStoreBackend;

    const ORBAX: &str = r#"{"item_handlers": "orbax.checkpoint._src.handlers.pytree_checkpoint_handler.PyTreeCheckpointHandler", "metrics": {}, "performance_metrics": {}, "init_timestamp_nsecs": 1796413132053623246, "commit_timestamp_nsecs": 1796413132096614618, "custom_metadata": {}}"#;

    #[test]
    fn orbax_document_round_trips() {
        let metadata = CheckpointMetadata::parse(ORBAX.as_bytes(), "m").unwrap();
        assert_eq!(metadata.init_timestamp_nsecs, Some(1796413132053623246));
        assert_eq!(metadata.commit_timestamp_nsecs, Some(1796413132096614618));
        assert!(matches!(
            metadata.item_handlers,
            Some(ItemHandlers::Single(_))
        ));
        assert_eq!(String::from_utf8(metadata.to_json()).unwrap(), ORBAX);
    }

    #[test]
    fn composite_handlers_parse() {
        let document =
            r#"{"item_handlers": {"extra": "J", "state": "S"}, "commit_timestamp_nsecs": null}"#;
        let metadata = CheckpointMetadata::parse(document.as_bytes(), "m").unwrap();
        let Some(ItemHandlers::Composite(handlers)) = metadata.item_handlers else {
            panic!("expected composite handlers");
        };
        assert_eq!(handlers["state"], "S");
        assert_eq!(metadata.commit_timestamp_nsecs, None);
        assert!(metadata.metrics.is_empty());
    }

    #[test]
    fn null_maps_read_as_empty() {
        let document = r#"{"metrics": null, "custom_metadata": null}"#;
        let metadata = CheckpointMetadata::parse(document.as_bytes(), "m").unwrap();
        assert!(metadata.metrics.is_empty());
        assert!(metadata.custom_metadata.is_empty());
    }

    #[test]
    fn unknown_fields_are_kept() {
        let document = r#"{"item_handlers": null, "future_field": [1, 2]}"#;
        let metadata = CheckpointMetadata::parse(document.as_bytes(), "m").unwrap();
        let written = String::from_utf8(metadata.to_json()).unwrap();
        assert!(written.ends_with(r#""future_field": [1, 2]}"#), "{written}");
    }

    #[test]
    fn invalid_document_is_rejected() {
        let err = CheckpointMetadata::parse(
            b"{\"init_timestamp_nsecs\": \"soon\"}",
            "ckpt/_CHECKPOINT_METADATA",
        )
        .unwrap_err();
        assert!(
            matches!(err, StorageError::InvalidMetadata { ref key, .. } if key == "ckpt/_CHECKPOINT_METADATA"),
            "{err}"
        );
    }

    #[test]
    fn write_then_read() {
        let store = Store::new(Arc::new(ObjectStoreBackend::memory().unwrap()));
        let metadata = CheckpointMetadata {
            init_timestamp_nsecs: Some(now_nsecs()),
            ..CheckpointMetadata::default()
        };
        metadata.write(&store).unwrap();
        assert_eq!(CheckpointMetadata::read(&store).unwrap(), Some(metadata));
    }

    #[test]
    fn read_missing_is_none() {
        let store = Store::new(Arc::new(ObjectStoreBackend::memory().unwrap()));
        assert_eq!(CheckpointMetadata::read(&store).unwrap(), None);
    }

    #[test]
    fn oversized_file_is_rejected() {
        let store = Store::new(Arc::new(ObjectStoreBackend::memory().unwrap()));
        let size = MAX_CHECKPOINT_METADATA_BYTES as usize + 1;
        store
            .put(CHECKPOINT_METADATA_FILE, Bytes::from(vec![b' '; size]))
            .unwrap();
        let err = CheckpointMetadata::read(&store).unwrap_err();
        assert!(err.to_string().contains("maximum"), "{err}");
    }
}
