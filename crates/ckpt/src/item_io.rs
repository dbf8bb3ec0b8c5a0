//! Writing and reading the items of a checkpoint: pytrees through
//! [`PyTreeCheckpointer`], JSON documents as Orbax's `JsonCheckpointHandler`
//! stores them.

use std::io;

use bytes::Bytes;
use ckpt_storage::{Store, COMMIT_SUCCESS_FILE, TMP_SUFFIX};
use serde_json::{ser::Formatter, Value};

use crate::{
    checkpointer::{standard_to_pytree, PYTREE_HANDLER_NAME, STANDARD_HANDLER_NAME},
    CkptError, ItemSave, PyTreeCheckpointer, PyTreeSave, Result,
};

/// Handler class that Orbax records in `_CHECKPOINT_METADATA` for JSON items.
pub(crate) const JSON_HANDLER_NAME: &str =
    "orbax.checkpoint._src.handlers.json_checkpoint_handler.JsonCheckpointHandler";

/// Name of the file that contains a JSON item, Orbax's default for `JsonCheckpointHandler`.
pub const JSON_ITEM_FILE: &str = "metadata";

/// Name of the item, and of the file inside it, where Orbax's
/// `CheckpointManager` stores a step's metrics as JSON. Orbax 0.12.8 reads
/// metrics from there, not from `_CHECKPOINT_METADATA`.
pub const METRICS_ITEM: &str = "metrics";

/// Maximum size in bytes of a JSON item file that a restore reads.
///
/// Orbax stores small documents here, such as a data iterator's position.
/// The cap keeps a damaged or hostile file from exhausting memory.
pub const MAX_JSON_ITEM_BYTES: u64 = 64 * 1024 * 1024;

/// An item ready to be written: standard saves are already checked and
/// turned into pytree saves.
#[derive(Clone, Debug)]
pub(crate) enum StagedItem {
    PyTree {
        args: Box<PyTreeSave>,
        /// The handler class recorded in `_CHECKPOINT_METADATA`.
        handler: &'static str,
    },
    Json {
        value: Value,
        /// The file inside the item directory.
        file: &'static str,
    },
}

impl StagedItem {
    /// Checks `args` and converts it, failing on what a save would reject
    /// before anything is written.
    pub(crate) fn new(args: ItemSave) -> Result<StagedItem> {
        Ok(match args {
            ItemSave::PyTree(args) => StagedItem::PyTree {
                args: Box::new(args),
                handler: PYTREE_HANDLER_NAME,
            },
            ItemSave::Standard(args) => StagedItem::PyTree {
                args: Box::new(standard_to_pytree(args)?),
                handler: STANDARD_HANDLER_NAME,
            },
            ItemSave::Json(args) => StagedItem::Json {
                value: args.item,
                file: JSON_ITEM_FILE,
            },
        })
    }

    pub(crate) fn handler_name(&self) -> &'static str {
        match self {
            StagedItem::PyTree { handler, .. } => handler,
            StagedItem::Json { .. } => JSON_HANDLER_NAME,
        }
    }

    /// Writes the item's files into `dir` without a commit marker.
    pub(crate) fn write_files(&self, checkpointer: &PyTreeCheckpointer, dir: &Store) -> Result<()> {
        match self {
            StagedItem::PyTree { args, .. } => {
                checkpointer.write_item_files(dir, args)?;
            }
            StagedItem::Json { value, file } => {
                dir.put(file, Bytes::from(to_python_json(value)))?;
            }
        }
        Ok(())
    }
}

/// Checks that `name` can name an item directory.
pub(crate) fn validate_item_name(name: &str) -> Result<()> {
    let invalid = |reason: &str| CkptError::InvalidItem {
        item: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(invalid("an item name is one non-empty path segment without \"/\""));
    }
    if name.contains(TMP_SUFFIX) {
        return Err(invalid("the temporary-directory suffix .orbax-checkpoint-tmp marks unfinished saves"));
    }
    ckpt_storage::validate_key(name)?;
    Ok(())
}

/// Writes `item` as the finalized item `name` inside the step directory
/// `step_dir`, as Orbax finalizes items inside a step.
///
/// Where the store renames atomically the files go to
/// `<name>.orbax-checkpoint-tmp`, which is renamed to `<name>` after
/// `commit_success.txt`; elsewhere they go to `<name>` directly.
pub(crate) fn write_finalized_item(
    checkpointer: &PyTreeCheckpointer,
    step_dir: &Store,
    name: &str,
    item: &StagedItem,
) -> Result<()> {
    let rename = step_dir.capabilities().atomic_rename;
    let work_name = if rename {
        format!("{name}{TMP_SUFFIX}")
    } else {
        name.to_owned()
    };
    let dir = step_dir.child(&work_name)?;
    item.write_files(checkpointer, &dir)?;

    // Orbax names the item's final path inside the step's temporary directory.
    let final_dir = step_dir.child(name)?;
    let final_path = match final_dir.local_path() {
        Some(path) => path.display().to_string(),
        None => final_dir.url(),
    };
    let marker = format!("Checkpoint commit was successful to {final_path}");
    dir.put(COMMIT_SUCCESS_FILE, Bytes::from(marker))?;
    if rename {
        step_dir.rename_child(&work_name, name)?;
    }
    Ok(())
}

/// Reads the JSON file `file` of the finalized item directory `item`.
pub(crate) fn read_json_item(item: &Store, file: &str) -> Result<Value> {
    let location = format!("{}/{file}", item.url());
    let invalid = |reason: String| CkptError::InvalidItem {
        item: location.clone(),
        reason,
    };
    let Some(size) = item.size(file)? else {
        return Err(invalid(format!(
            "{file} is missing, so this is not a JSON item: restore it as a pytree"
        )));
    };
    if size > MAX_JSON_ITEM_BYTES {
        return Err(invalid(format!(
            "the file has {size} bytes, more than the maximum of {MAX_JSON_ITEM_BYTES}"
        )));
    }
    let bytes = item.get_required(file)?;
    serde_json::from_slice(&bytes).map_err(|err| invalid(format!("not valid JSON: {err}")))
}

/// Serializes `value` as Python's `json.dumps` does with its defaults:
/// `", "` and `": "` separators and non-ASCII characters escaped as `\uXXXX`.
///
/// Object keys come out sorted, because `serde_json` maps are sorted, and
/// floats use Rust's shortest form, which can differ from Python's in the
/// exponent (`1e20` against `1e+20`). Python reads both.
pub(crate) fn to_python_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, PythonJson);
    // serde_json fails only on map keys that are not strings and on write
    // errors, and a `Value` written to a `Vec` has neither.
    let _ = serde::Serialize::serialize(value, &mut serializer);
    out
}

struct PythonJson;

impl Formatter for PythonJson {
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, writer: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(&mut self, writer: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()> {
        let mut units = [0u16; 2];
        for ch in fragment.chars() {
            if ch.is_ascii() {
                writer.write_all(&[ch as u8])?;
                continue;
            }
            for unit in ch.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ckpt_storage::ObjectStoreBackend;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn memory_store() -> Store {
        Store::new(Arc::new(ObjectStoreBackend::memory().unwrap()))
    }

    #[test]
    fn python_json_matches_orbax_file() {
        // The bytes of d_manager/ckpt/1/extra/metadata, written by Orbax 0.12.8.
        let value = json!({"note": "step 1", "step": 1});
        assert_eq!(to_python_json(&value), br#"{"note": "step 1", "step": 1}"#);
    }

    #[test]
    fn python_json_escapes_non_ascii() {
        let value = json!(["h\u{e9}llo", "\u{1f600}", "tab\t"]);
        let text = String::from_utf8(to_python_json(&value)).unwrap();
        assert_eq!(text, r#"["h\u00e9llo", "\ud83d\ude00", "tab\t"]"#);
    }

    proptest! {
        #[test]
        fn python_json_round_trips(text in ".*", number in any::<i64>(), flag in any::<bool>()) {
            let value = json!({"text": text, "number": number, "flag": flag, "list": [null, 1.5]});
            let bytes = to_python_json(&value);
            prop_assert!(bytes.is_ascii());
            let parsed: Value = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(parsed, value);
        }
    }

    #[test]
    fn json_item_is_finalized_on_commit_file_store() {
        let step = memory_store();
        let item = StagedItem::Json {
            value: json!({"a": 1}),
            file: JSON_ITEM_FILE,
        };
        let controller = crate::async_save::tests::controller();
        let checkpointer = PyTreeCheckpointer::new(controller);
        write_finalized_item(&checkpointer, &step, "extra", &item).unwrap();
        let dir = step.child("extra").unwrap();
        assert!(dir.exists(COMMIT_SUCCESS_FILE).unwrap());
        assert_eq!(read_json_item(&dir, JSON_ITEM_FILE).unwrap(), json!({"a": 1}));
    }

    #[test]
    fn json_item_renamed_on_local_store() {
        let temp = tempfile::tempdir().unwrap();
        let step = ckpt_storage::open_store(temp.path().to_str().unwrap()).unwrap();
        let controller = crate::async_save::tests::controller();
        let checkpointer = PyTreeCheckpointer::new(controller);
        let item = StagedItem::Json {
            value: json!(7),
            file: JSON_ITEM_FILE,
        };
        write_finalized_item(&checkpointer, &step, "extra", &item).unwrap();
        assert_eq!(step.list_dirs().unwrap(), ["extra"]);
        let marker = step.child("extra").unwrap().get_required(COMMIT_SUCCESS_FILE).unwrap();
        let expected = format!("Checkpoint commit was successful to {}", temp.path().join("extra").display());
        assert_eq!(marker, expected.as_bytes());
    }

    #[test]
    fn read_json_item_rejects_invalid_json() {
        let dir = memory_store();
        dir.put(JSON_ITEM_FILE, Bytes::from_static(b"{not json")).unwrap();
        let err = read_json_item(&dir, JSON_ITEM_FILE).unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
    }

    #[test]
    fn read_json_item_rejects_missing_file() {
        let err = read_json_item(&memory_store(), JSON_ITEM_FILE).unwrap_err();
        assert!(err.to_string().contains("is missing"), "{err}");
    }

    #[test]
    fn item_names_are_checked() {
        for name in ["", "a/b", "..", "state.orbax-checkpoint-tmp"] {
            assert!(validate_item_name(name).is_err(), "{name:?} was accepted");
        }
        assert!(validate_item_name("state").is_ok());
    }
}
