use std::collections::BTreeMap;

use bytes::Bytes;

use super::STRING_VALUE_TYPE;
use crate::{
    CkptError, Leaf, RestoreContext, RestoreEntry, Result, SaveContext, SaveEntry, SavedLeaf,
    TypeHandler,
};

/// The file holding string leaves, one JSON member per parameter name.
pub(crate) const STRINGS_FILE: &str = "_strings.json";

/// Largest `_strings.json` read, so a hostile file cannot exhaust memory.
const MAX_STRINGS_FILE_BYTES: usize = 256 << 20;

/// Saves strings as members of `_strings.json`, written by the controller
/// (Orbax's string handler).
#[derive(Clone, Copy, Debug, Default)]
pub struct StringHandler;

impl TypeHandler for StringHandler {
    fn value_type(&self) -> &str {
        STRING_VALUE_TYPE
    }

    fn save(&self, context: &SaveContext<'_>, entries: &[SaveEntry<'_>]) -> Result<Vec<SavedLeaf>> {
        let mut members = serde_json::Map::new();
        for entry in entries {
            let Leaf::String(value) = entry.leaf else {
                return Err(CkptError::InvalidLeaf {
                    key_path: entry.key_path.to_string(),
                    reason: "the string handler was given a leaf that is not a string".into(),
                });
            };
            members.insert(entry.param_name.to_owned(), value.clone().into());
        }
        if !members.is_empty() {
            let text = serde_json::Value::Object(members).to_string();
            context.item.put(STRINGS_FILE, Bytes::from(text))?;
        }
        Ok(entries
            .iter()
            .map(|_| SavedLeaf {
                value_type: STRING_VALUE_TYPE.to_owned(),
                ..SavedLeaf::default()
            })
            .collect())
    }

    fn restore(
        &self,
        context: &RestoreContext<'_>,
        entries: &[RestoreEntry<'_>],
    ) -> Result<Vec<Leaf>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let strings = read_strings(context.item)?;
        entries
            .iter()
            .map(|entry| {
                let value = lookup(&strings, entry.param_name).ok_or_else(|| {
                    CkptError::InvalidMetadata {
                        path: format!("{}/{STRINGS_FILE}", context.item.url()),
                        reason: format!("no string for {}", entry.param_name),
                    }
                })?;
                Ok(Leaf::String(value.to_owned()))
            })
            .collect()
    }
}

/// Reads `_strings.json` of an item.
pub(crate) fn read_strings(item: &ckpt_storage::Store) -> Result<BTreeMap<String, serde_json::Value>> {
    let path = format!("{}/{STRINGS_FILE}", item.url());
    let bytes = item.get_required(STRINGS_FILE)?;
    if bytes.len() > MAX_STRINGS_FILE_BYTES {
        return Err(CkptError::InvalidMetadata {
            path,
            reason: format!("the file has {} bytes, more than the {MAX_STRINGS_FILE_BYTES} read", bytes.len()),
        });
    }
    serde_json::from_slice(&bytes).map_err(|err| CkptError::InvalidMetadata {
        path,
        reason: format!("not a JSON object of strings: {err}"),
    })
}

/// Finds a string by parameter name; a `/` in the name makes nested objects,
/// as TensorStore's JSON pointer writes do.
pub(crate) fn lookup<'a>(
    strings: &'a BTreeMap<String, serde_json::Value>,
    param_name: &str,
) -> Option<&'a str> {
    if let Some(value) = strings.get(param_name) {
        return value.as_str();
    }
    let mut parts = param_name.split('/');
    let mut current = strings.get(parts.next()?)?;
    for part in parts {
        current = current.get(part)?;
    }
    current.as_str()
}
