//! Encoding of `_METADATA` in the byte layout Orbax writes.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::python_json::PythonJsonFormatter;
use super::{MetadataEntry, TreeMetadata};

#[derive(Serialize)]
struct Document<'a> {
    tree_metadata: Entries,
    use_ocdbt: Option<bool>,
    use_zarr3: bool,
    store_array_data_equal_to_fill_value: bool,
    custom_metadata: &'a serde_json::Value,
}

/// The entries, serialized as one JSON object in flatten order.
struct Entries(Vec<MetadataEntry>);

#[derive(Serialize)]
struct Entry<'a> {
    key_metadata: Vec<KeyMetadata>,
    value_metadata: ValueMetadata<'a>,
}

#[derive(Serialize)]
struct KeyMetadata {
    key: String,
    key_type: u8,
}

#[derive(Serialize)]
struct ValueMetadata<'a> {
    value_type: &'a str,
    skip_deserialize: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    write_shape: Option<&'a [u64]>,
}

impl Serialize for Entries {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for entry in &self.0 {
            let key_metadata = entry
                .path
                .iter()
                .map(|key| KeyMetadata {
                    key: key.name().into_owned(),
                    key_type: key.key_type().code(),
                })
                .collect();
            let value = &entry.value_metadata;
            let body = Entry {
                key_metadata,
                value_metadata: ValueMetadata {
                    value_type: value.value_type.as_str(),
                    skip_deserialize: value.skip_deserialize,
                    write_shape: value.write_shape.as_deref(),
                },
            };
            map.serialize_entry(&entry.entry_key(), &body)?;
        }
        map.end()
    }
}

impl TreeMetadata {
    /// Encodes the document as Orbax 0.12.8 writes it with Python's
    /// `json.dumps`: members in Orbax's order, entries in JAX flatten order,
    /// `", "` and `": "` separators and ASCII-only output.
    ///
    /// For trees written by Orbax the bytes are identical to Orbax's file,
    /// with two exceptions. Integers in `custom_metadata` beyond the 64-bit
    /// range come out as floats, and some key names with unassigned Unicode
    /// code points get different entry names. Readers see the same document
    /// either way.
    pub fn to_json(&self) -> Vec<u8> {
        let document = Document {
            tree_metadata: Entries(self.entries()),
            use_ocdbt: self.use_ocdbt,
            use_zarr3: self.use_zarr3,
            store_array_data_equal_to_fill_value: self.store_array_data_equal_to_fill_value,
            custom_metadata: &self.custom_metadata,
        };

        let mut out = Vec::new();
        let mut serializer = serde_json::Serializer::with_formatter(&mut out, PythonJsonFormatter);
        // Serializing into memory fails only on a non-string map key or a
        // non-finite float. These types have string keys, and a JSON value
        // cannot contain a non-finite float.
        let result = document.serialize(&mut serializer);
        debug_assert!(result.is_ok(), "{result:?}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::ValueMetadata;
    use crate::tree::PyTree;

    fn encode(metadata: &TreeMetadata) -> String {
        String::from_utf8_lossy(&metadata.to_json()).into_owned()
    }

    #[test]
    fn encode_matches_orbax_layout() {
        let metadata = TreeMetadata::new(PyTree::dict([
            ("lr", PyTree::leaf(ValueMetadata::new("scalar"))),
            ("w", PyTree::leaf(ValueMetadata::jax_array(vec![1, 4]))),
            ("opt", PyTree::tuple([PyTree::None])),
        ]));
        let expected = concat!(
            r#"{"tree_metadata": {"#,
            r#""('lr',)": {"key_metadata": [{"key": "lr", "key_type": 2}], "value_metadata": {"value_type": "scalar", "skip_deserialize": false}}, "#,
            r#""('opt', '0')": {"key_metadata": [{"key": "opt", "key_type": 2}, {"key": "0", "key_type": 1}], "value_metadata": {"value_type": "None", "skip_deserialize": true}}, "#,
            r#""('w',)": {"key_metadata": [{"key": "w", "key_type": 2}], "value_metadata": {"value_type": "jax.Array", "skip_deserialize": false, "write_shape": [1, 4]}}"#,
            r#"}, "use_ocdbt": true, "use_zarr3": false, "store_array_data_equal_to_fill_value": true, "custom_metadata": null}"#,
        );
        assert_eq!(encode(&metadata), expected);
    }

    #[test]
    fn encode_unknown_ocdbt_as_null() {
        let mut metadata = TreeMetadata::new(PyTree::dict::<String>([]));
        metadata.use_ocdbt = None;
        assert!(encode(&metadata).contains(r#""use_ocdbt": null"#));
    }

    #[test]
    fn encode_empty_root() {
        let metadata = TreeMetadata::new(PyTree::dict::<String>([]));
        let expected = r#"{"tree_metadata": {"()": {"key_metadata": [], "value_metadata": {"value_type": "Dict", "skip_deserialize": true}}}"#;
        assert!(
            encode(&metadata).starts_with(expected),
            "{}",
            encode(&metadata)
        );
    }

    #[test]
    fn encode_custom_metadata() {
        let mut metadata = TreeMetadata::new(PyTree::dict::<String>([]));
        metadata.custom_metadata = serde_json::json!({"lr": 1e-5, "name": "é"});
        assert!(
            encode(&metadata).ends_with(r#""custom_metadata": {"lr": 1e-05, "name": "\u00e9"}}"#),
            "{}",
            encode(&metadata)
        );
    }

    #[test]
    fn encode_escapes_entry_key() {
        let metadata = TreeMetadata::new(PyTree::dict([(
            "it's \"x\"",
            PyTree::leaf(ValueMetadata::new("scalar")),
        )]));
        // Python: json.dumps(str(("it's \"x\"",)))
        let expected = r#"{"tree_metadata": {"('it\\'s \"x\"',)": "#;
        assert!(
            encode(&metadata).starts_with(expected),
            "{}",
            encode(&metadata)
        );
    }
}
