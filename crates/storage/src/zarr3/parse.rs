//! Validation of `zarr.json` documents. Every function returns the reason
//! for the first failed check, which the caller wraps in
//! [`crate::StorageError::InvalidMetadata`] with the document's key.

use ckpt_core::DType;
use serde_json::{Map, Value};

use super::metadata::{ZarrV3Compressor, ZarrV3Metadata, MAX_ZARR_JSON_BYTES};

/// The fields of a zarr v3 array's `zarr.json`, as the zarr v3 specification lists them.
const KNOWN_FIELDS: [&str; 11] = [
    "attributes",
    "chunk_grid",
    "chunk_key_encoding",
    "codecs",
    "data_type",
    "dimension_names",
    "fill_value",
    "node_type",
    "shape",
    "storage_transformers",
    "zarr_format",
];

const SUPPORTED_CODECS: &str =
    "ckpt reads only a single \"sharding_indexed\" codec, which Orbax writes";
const SUPPORTED_INNER_CODECS: &str =
    "ckpt reads \"bytes\" optionally followed by \"zstd\", which Orbax writes";

/// A codec, chunk grid or chunk key encoding: its `name` and optional `configuration`.
type Named<'a> = (&'a str, Option<&'a Map<String, Value>>);

/// Checks the size cap and every field of a `zarr.json` document and builds the metadata.
pub(super) fn parse_document(document: &[u8]) -> Result<ZarrV3Metadata, String> {
    if document.len() > MAX_ZARR_JSON_BYTES {
        return Err(format!(
            "the document has {} bytes, more than the maximum of {MAX_ZARR_JSON_BYTES} for a zarr.json",
            document.len()
        ));
    }
    let value: Value =
        serde_json::from_slice(document).map_err(|error| format!("not valid JSON: {error}"))?;
    let Value::Object(fields) = value else {
        return Err("expected a JSON object".to_owned());
    };
    parse_fields(&fields)
}

fn parse_fields(fields: &Map<String, Value>) -> Result<ZarrV3Metadata, String> {
    let required = |name: &str| {
        fields
            .get(name)
            .ok_or_else(|| format!("missing field {name:?}"))
    };

    // The format and node type come first, so that a zarr v2 `.zarray` or a
    // group's zarr.json gets a message naming what it is.
    let format = required("zarr_format")?;
    if format.as_u64() != Some(3) {
        return Err(format!(
            "zarr_format is {format}, expected 3 for a zarr.json"
        ));
    }
    match required("node_type")? {
        Value::String(node_type) if node_type == "array" => {}
        Value::String(node_type) if node_type == "group" => {
            return Err(
                "node_type is \"group\": the document describes a zarr group, not an array"
                    .to_owned(),
            )
        }
        other => return Err(format!("node_type is {other}, expected \"array\"")),
    }
    if let Some(unknown) = fields
        .keys()
        .find(|name| !KNOWN_FIELDS.contains(&name.as_str()))
    {
        return Err(format!(
            "unknown field {unknown:?}: a zarr v3 array's zarr.json has only {}",
            KNOWN_FIELDS.join(", ")
        ));
    }

    let shape = parse_extents(required("shape")?, "shape")?;
    let dtype = parse_data_type(required("data_type")?)?;
    let chunks = parse_chunk_grid(required("chunk_grid")?)?;
    parse_chunk_key_encoding(required("chunk_key_encoding")?)?;
    let compressor = parse_codecs(required("codecs")?, &chunks, dtype)?;
    check_fill_value(required("fill_value")?, dtype)?;
    check_optional_fields(fields, shape.len())?;

    ZarrV3Metadata::new(shape, chunks, dtype, compressor).map_err(|error| error.to_string())
}

/// Parses a `shape` or `chunk_shape` array of non-negative integers.
fn parse_extents(value: &Value, name: &str) -> Result<Vec<u64>, String> {
    let invalid = || format!("{name} is {value}, expected an array of non-negative integers");
    let Value::Array(items) = value else {
        return Err(invalid());
    };
    items
        .iter()
        .map(|item| item.as_u64().ok_or_else(invalid))
        .collect()
}

fn parse_data_type(value: &Value) -> Result<DType, String> {
    let Value::String(name) = value else {
        return Err(format!(
            "data_type is {value}, expected a string such as \"float32\""
        ));
    };
    DType::from_name(name).map_err(|_| {
        format!("unsupported data_type {name:?}: expected a zarr v3 name such as \"float32\", \"bfloat16\", \"complex64\" or \"int4\"")
    })
}

/// Parses the `chunk_grid` and returns its chunk shape.
fn parse_chunk_grid(value: &Value) -> Result<Vec<u64>, String> {
    let (name, configuration) = parse_named(value, "chunk_grid")?;
    if name != "regular" {
        return Err(format!(
            "chunk_grid {name:?} is not supported: ckpt reads only \"regular\", which Orbax writes"
        ));
    }
    let Some(configuration) = configuration else {
        return Err("the \"regular\" chunk_grid has no configuration".to_owned());
    };
    check_keys(
        configuration,
        &["chunk_shape"],
        "the chunk_grid configuration",
    )?;
    let Some(chunk_shape) = configuration.get("chunk_shape") else {
        return Err("the chunk_grid configuration has no \"chunk_shape\"".to_owned());
    };
    parse_extents(chunk_shape, "the chunk_grid chunk_shape")
}

fn parse_chunk_key_encoding(value: &Value) -> Result<(), String> {
    let (name, configuration) = parse_named(value, "chunk_key_encoding")?;
    if name != "default" {
        return Err(format!(
            "chunk_key_encoding {name:?} is not supported: ckpt reads only \"default\", which Orbax writes"
        ));
    }
    let Some(configuration) = configuration else {
        return Ok(());
    };
    check_keys(
        configuration,
        &["separator"],
        "the chunk_key_encoding configuration",
    )?;
    match configuration.get("separator") {
        None => Ok(()),
        Some(Value::String(separator)) if separator == "/" => Ok(()),
        Some(other) => Err(format!(
            "the chunk_key_encoding separator is {other}, but ckpt reads only \"/\", which Orbax writes"
        )),
    }
}

/// Checks the array's `codecs` and returns the compressor of the inner chunks.
fn parse_codecs(
    value: &Value,
    chunks: &[u64],
    dtype: DType,
) -> Result<Option<ZarrV3Compressor>, String> {
    let codecs = parse_codec_list(value, "codecs")?;
    let [(name, configuration)] = codecs.as_slice() else {
        let names: Vec<&str> = codecs.iter().map(|codec| codec.0).collect();
        return Err(format!("codecs are {names:?}: {SUPPORTED_CODECS}"));
    };
    if *name != "sharding_indexed" {
        return Err(format!("unsupported codec {name:?}: {SUPPORTED_CODECS}"));
    }
    let Some(configuration) = configuration else {
        return Err("the \"sharding_indexed\" codec has no configuration".to_owned());
    };
    parse_sharding(configuration, chunks, dtype)
}

fn parse_sharding(
    configuration: &Map<String, Value>,
    chunks: &[u64],
    dtype: DType,
) -> Result<Option<ZarrV3Compressor>, String> {
    check_keys(
        configuration,
        &["chunk_shape", "codecs", "index_codecs", "index_location"],
        "the sharding_indexed configuration",
    )?;
    let required = |name: &str| {
        configuration
            .get(name)
            .ok_or_else(|| format!("the sharding_indexed configuration has no {name:?}"))
    };

    let inner_shape = parse_extents(required("chunk_shape")?, "the sharding_indexed chunk_shape")?;
    if inner_shape != chunks {
        return Err(format!(
            "the sharding_indexed chunk_shape {inner_shape:?} differs from the chunk_grid chunk_shape {chunks:?}: ckpt reads only shards of one chunk, which Orbax writes"
        ));
    }
    match configuration.get("index_location") {
        None => {}
        Some(Value::String(location)) if location == "end" => {}
        Some(other) => {
            return Err(format!(
                "index_location is {other}, but ckpt reads only \"end\", which Orbax writes"
            ))
        }
    }
    check_index_codecs(required("index_codecs")?)?;
    parse_inner_codecs(required("codecs")?, dtype)
}

fn parse_inner_codecs(value: &Value, dtype: DType) -> Result<Option<ZarrV3Compressor>, String> {
    let codecs = parse_codec_list(value, "the sharding_indexed codecs")?;
    let Some(((first, first_configuration), rest)) = codecs.split_first() else {
        return Err(format!(
            "the sharding_indexed codecs are empty: {SUPPORTED_INNER_CODECS}"
        ));
    };
    if *first != "bytes" {
        return Err(format!(
            "unsupported inner codec {first:?}: {SUPPORTED_INNER_CODECS}"
        ));
    }
    check_bytes_codec(*first_configuration, dtype.item_size(), "inner")?;
    match rest {
        [] => Ok(None),
        [("zstd", configuration)] => parse_zstd(*configuration).map(Some),
        [(name, _)] => Err(format!(
            "unsupported inner codec {name:?}: {SUPPORTED_INNER_CODECS}"
        )),
        _ => {
            let names: Vec<&str> = codecs.iter().map(|codec| codec.0).collect();
            Err(format!(
                "the sharding_indexed codecs are {names:?}: {SUPPORTED_INNER_CODECS}"
            ))
        }
    }
}

/// Checks that the shard index is stored as little-endian integers followed by a CRC-32C.
fn check_index_codecs(value: &Value) -> Result<(), String> {
    let codecs = parse_codec_list(value, "index_codecs")?;
    let supported = "ckpt reads only \"bytes\" then \"crc32c\", which Orbax writes";
    let [("bytes", bytes_configuration), ("crc32c", crc_configuration)] = codecs.as_slice() else {
        let names: Vec<&str> = codecs.iter().map(|codec| codec.0).collect();
        return Err(format!("index_codecs are {names:?}: {supported}"));
    };
    // Index entries are 8-byte integers.
    check_bytes_codec(*bytes_configuration, 8, "index")?;
    match crc_configuration {
        None => Ok(()),
        Some(configuration) if configuration.is_empty() => Ok(()),
        Some(configuration) => Err(format!(
            "the \"crc32c\" index codec has configuration {}, but it takes none",
            Value::Object((*configuration).clone())
        )),
    }
}

/// Checks a `bytes` codec for elements of `item_size` bytes. `role` is "inner" or "index".
///
/// The zarr v3 specification requires `endian` only when elements have
/// more than one byte. ckpt reads only little-endian data.
fn check_bytes_codec(
    configuration: Option<&Map<String, Value>>,
    item_size: usize,
    role: &str,
) -> Result<(), String> {
    let endian = match configuration {
        None => None,
        Some(configuration) => {
            check_keys(
                configuration,
                &["endian"],
                &format!("the {role} \"bytes\" codec configuration"),
            )?;
            configuration.get("endian")
        }
    };
    match endian {
        Some(Value::String(endian)) if endian == "little" => Ok(()),
        Some(Value::String(endian)) if endian == "big" && item_size == 1 => Ok(()),
        Some(Value::String(endian)) if endian == "big" => Err(format!(
            "the {role} \"bytes\" codec is big-endian, but ckpt reads only \"little\", which Orbax writes"
        )),
        Some(other) => Err(format!(
            "the {role} \"bytes\" codec has endian {other}, expected \"little\" or \"big\""
        )),
        None if item_size == 1 => Ok(()),
        None => Err(format!(
            "the {role} \"bytes\" codec has no \"endian\", which elements of {item_size} bytes need"
        )),
    }
}

fn parse_zstd(configuration: Option<&Map<String, Value>>) -> Result<ZarrV3Compressor, String> {
    let Some(configuration) = configuration else {
        return Err(
            "the \"zstd\" codec has no configuration: it needs \"level\" and \"checksum\""
                .to_owned(),
        );
    };
    check_keys(
        configuration,
        &["checksum", "level"],
        "the \"zstd\" codec configuration",
    )?;
    let level = match configuration.get("level") {
        Some(level) => level
            .as_i64()
            .and_then(|level| i32::try_from(level).ok())
            .ok_or_else(|| format!("the zstd level is {level}, expected an integer"))?,
        None => return Err("the \"zstd\" codec has no \"level\"".to_owned()),
    };
    check_zstd_level(level)?;
    let checksum = match configuration.get("checksum") {
        Some(Value::Bool(checksum)) => *checksum,
        Some(other) => {
            return Err(format!(
                "the zstd checksum is {other}, expected true or false"
            ))
        }
        None => return Err("the \"zstd\" codec has no \"checksum\"".to_owned()),
    };
    Ok(ZarrV3Compressor::Zstd { level, checksum })
}

/// Checks that `level` is inside the range of the linked zstd library.
pub(super) fn check_zstd_level(level: i32) -> Result<(), String> {
    let levels = zstd::compression_level_range();
    if levels.contains(&level) {
        Ok(())
    } else {
        Err(format!(
            "zstd level {level} is outside the supported range {}..={}",
            levels.start(),
            levels.end()
        ))
    }
}

/// Checks that `fill_value` is a valid value of `dtype` and is its zero.
///
/// Missing chunks and the padding of edge chunks contain the fill value, and
/// ckpt reads and writes them as zero bytes, so it rejects other fill values.
fn check_fill_value(value: &Value, dtype: DType) -> Result<(), String> {
    let (valid, zero) = if dtype == DType::Bool {
        (value.is_boolean(), value == &Value::Bool(false))
    } else if dtype.is_complex() {
        match value {
            Value::Array(parts) if parts.len() == 2 => (
                parts.iter().all(is_float_literal),
                parts.iter().all(is_positive_zero),
            ),
            _ => (false, false),
        }
    } else if dtype.is_float() {
        (is_float_literal(value), is_positive_zero(value))
    } else {
        (is_integer_of(value, dtype), value.as_i64() == Some(0))
    };

    if !valid {
        return Err(format!(
            "fill_value {value} is not a valid {dtype} value: expected {}",
            fill_value_form(dtype)
        ));
    }
    if !zero {
        return Err(format!(
            "fill_value {value} is not supported: ckpt reads only the zero fill value of {dtype}, which Orbax writes"
        ));
    }
    Ok(())
}

/// Describes the JSON forms of a valid fill value of `dtype`, for error messages.
fn fill_value_form(dtype: DType) -> &'static str {
    if dtype == DType::Bool {
        "true or false"
    } else if dtype.is_complex() {
        "an array of two numbers"
    } else if dtype.is_float() {
        "a number, \"NaN\", \"Infinity\", \"-Infinity\" or a hex string of the raw bits"
    } else {
        "an integer in the type's range"
    }
}

/// Returns `true` if `value` is a zarr v3 float literal: a number, a named special
/// value or `0x` followed by hex digits of the raw bits.
fn is_float_literal(value: &Value) -> bool {
    match value {
        Value::Number(_) => true,
        Value::String(text) => match text.strip_prefix("0x") {
            Some(digits) => !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_hexdigit()),
            None => matches!(text.as_str(), "NaN" | "Infinity" | "-Infinity"),
        },
        _ => false,
    }
}

/// Returns `true` if `value` is the number zero without a minus sign (`0` or `0.0`), whose bits are all zero.
fn is_positive_zero(value: &Value) -> bool {
    value
        .as_f64()
        .is_some_and(|number| number == 0.0 && number.is_sign_positive())
}

/// Returns `true` if `value` is a JSON integer inside the range of the integer type `dtype`.
fn is_integer_of(value: &Value, dtype: DType) -> bool {
    let Some(number) = value
        .as_i64()
        .map(i128::from)
        .or_else(|| value.as_u64().map(i128::from))
    else {
        return false;
    };
    let bits = if dtype == DType::Int4 {
        4
    } else {
        8 * dtype.item_size() as u32
    };
    let (min, max) = if dtype.is_signed_int() {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    };
    (min..=max).contains(&number)
}

/// Checks `attributes`, `dimension_names` and `storage_transformers` where present.
fn check_optional_fields(fields: &Map<String, Value>, rank: usize) -> Result<(), String> {
    if let Some(attributes) = fields.get("attributes") {
        if !attributes.is_object() {
            return Err(format!(
                "attributes is {attributes}, expected a JSON object"
            ));
        }
    }
    if let Some(names) = fields.get("dimension_names") {
        let valid = match names {
            Value::Array(names) => {
                names.len() == rank && names.iter().all(|name| name.is_string() || name.is_null())
            }
            _ => false,
        };
        if !valid {
            return Err(format!(
                "dimension_names is {names}, expected an array of {rank} strings or nulls, one per dimension"
            ));
        }
    }
    match fields.get("storage_transformers") {
        None => Ok(()),
        Some(Value::Array(transformers)) if transformers.is_empty() => Ok(()),
        Some(other) => Err(format!(
            "storage_transformers are {other}, but ckpt reads only arrays without storage transformers"
        )),
    }
}

/// Parses an array of codec objects. `field` names the list in messages.
fn parse_codec_list<'a>(value: &'a Value, field: &str) -> Result<Vec<Named<'a>>, String> {
    let Value::Array(codecs) = value else {
        return Err(format!("{field} is {value}, expected an array of codecs"));
    };
    codecs
        .iter()
        .map(|codec| parse_named(codec, "a codec"))
        .collect()
}

/// Parses an object with a string `name` and an optional object `configuration`.
fn parse_named<'a>(value: &'a Value, field: &str) -> Result<Named<'a>, String> {
    let Value::Object(object) = value else {
        return Err(format!(
            "{field} is {value}, expected an object with a \"name\""
        ));
    };
    check_keys(object, &["configuration", "name"], field)?;
    let Some(Value::String(name)) = object.get("name") else {
        return Err(format!("{field} {value} has no string \"name\""));
    };
    match object.get("configuration") {
        None => Ok((name, None)),
        Some(Value::Object(configuration)) => Ok((name, Some(configuration))),
        Some(other) => Err(format!(
            "the configuration of {name:?} is {other}, expected an object"
        )),
    }
}

/// Rejects the first key of `object` that is not in `allowed`. `object_name` names the object in messages.
fn check_keys(
    object: &Map<String, Value>,
    allowed: &[&str],
    object_name: &str,
) -> Result<(), String> {
    match object.keys().find(|key| !allowed.contains(&key.as_str())) {
        None => Ok(()),
        Some(unknown) => Err(format!(
            "unknown field {unknown:?} in {object_name}: expected only {}",
            allowed.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::{zarr3::metadata::tests::ORBAX_KERNEL, StorageError, ZarrV3Metadata};
    use serde_json::Value;

    use super::*;

    fn parse(document: &str) -> crate::Result<ZarrV3Metadata> {
        ZarrV3Metadata::parse(document.as_bytes(), "a/zarr.json")
    }

    /// Returns the Orbax kernel document with the value at a JSON pointer
    /// replaced by `value`, or removed when `None`.
    fn edit(document: &str, pointer: &str, value: Option<&str>) -> String {
        let mut root: Value = serde_json::from_str(document).unwrap();
        let (parent, last) = pointer.rsplit_once('/').unwrap();
        match root.pointer_mut(parent).unwrap() {
            Value::Object(object) => match value {
                Some(value) => {
                    object.insert(last.to_owned(), serde_json::from_str(value).unwrap());
                }
                None => {
                    object.remove(last);
                }
            },
            Value::Array(items) => {
                let index: usize = last.parse().unwrap();
                match value {
                    Some(value) => items[index] = serde_json::from_str(value).unwrap(),
                    None => {
                        items.remove(index);
                    }
                }
            }
            other => panic!("{parent} is {other}, not a container"),
        }
        serde_json::to_string(&root).unwrap()
    }

    fn kernel_with(pointer: &str, value: Option<&str>) -> String {
        edit(ORBAX_KERNEL, pointer, value)
    }

    fn reason_of(result: crate::Result<ZarrV3Metadata>) -> String {
        match result {
            Err(StorageError::InvalidMetadata { key, reason }) => {
                assert_eq!(key, "a/zarr.json");
                reason
            }
            other => panic!("expected InvalidMetadata, got {other:?}"),
        }
    }

    fn rejection(pointer: &str, value: Option<&str>) -> String {
        reason_of(parse(&kernel_with(pointer, value)))
    }

    const SHARDING: &str = "/codecs/0/configuration";
    const INNER: &str = "/codecs/0/configuration/codecs";
    const INDEX: &str = "/codecs/0/configuration/index_codecs";

    #[test]
    fn oversized_document_is_rejected() {
        let document = format!("{ORBAX_KERNEL}{}", " ".repeat(MAX_ZARR_JSON_BYTES));
        let reason = reason_of(parse(&document));
        assert!(reason.contains("maximum"), "{reason}");
    }

    #[test]
    fn malformed_json_is_rejected() {
        let reason = reason_of(parse("{\"shape\":"));
        assert!(reason.contains("not valid JSON"), "{reason}");
    }

    #[test]
    fn non_object_is_rejected() {
        let reason = reason_of(parse("[1,2]"));
        assert!(reason.contains("JSON object"), "{reason}");
    }

    #[test]
    fn zarr_v2_format_is_rejected() {
        let reason = rejection("/zarr_format", Some("2"));
        assert!(reason.contains("zarr_format is 2, expected 3"), "{reason}");
    }

    #[test]
    fn group_is_rejected() {
        let reason = rejection("/node_type", Some(r#""group""#));
        assert!(reason.contains("zarr group"), "{reason}");
        let reason = rejection("/node_type", Some("1"));
        assert!(reason.contains("expected \"array\""), "{reason}");
    }

    #[test]
    fn unknown_field_is_rejected() {
        let reason = rejection("/compressor", Some("null"));
        assert!(reason.contains("unknown field \"compressor\""), "{reason}");
    }

    #[test]
    fn missing_field_is_rejected() {
        let reason = rejection("/fill_value", None);
        assert!(reason.contains("missing field \"fill_value\""), "{reason}");
    }

    #[test]
    fn negative_extent_is_rejected() {
        let reason = rejection("/shape", Some("[-1,8]"));
        assert!(reason.contains("non-negative integers"), "{reason}");
    }

    #[test]
    fn unknown_data_type_is_rejected() {
        let reason = rejection("/data_type", Some(r#""<f4""#));
        assert!(reason.contains("unsupported data_type \"<f4\""), "{reason}");
        let reason = rejection("/data_type", Some(r#"{"name":"float32"}"#));
        assert!(reason.contains("expected a string"), "{reason}");
    }

    #[test]
    fn irregular_chunk_grid_is_rejected() {
        let reason = rejection("/chunk_grid/name", Some(r#""rectilinear""#));
        assert!(
            reason.contains("\"rectilinear\" is not supported"),
            "{reason}"
        );
        let reason = rejection("/chunk_grid/configuration", None);
        assert!(reason.contains("no configuration"), "{reason}");
    }

    #[test]
    fn chunk_rank_mismatch_is_rejected() {
        let document = kernel_with("/chunk_grid/configuration/chunk_shape", Some("[4]"));
        let document = edit(&document, &format!("{SHARDING}/chunk_shape"), Some("[4]"));
        let reason = reason_of(parse(&document));
        assert!(reason.contains("chunk shape"), "{reason}");
    }

    #[test]
    fn zero_chunk_extent_is_rejected() {
        let document = kernel_with("/chunk_grid/configuration/chunk_shape", Some("[4,0]"));
        let document = edit(&document, &format!("{SHARDING}/chunk_shape"), Some("[4,0]"));
        let reason = reason_of(parse(&document));
        assert!(reason.contains("at least 1"), "{reason}");
    }

    #[test]
    fn overflowing_shape_is_rejected() {
        let document = kernel_with("/shape", Some("[18446744073709551615,2]"));
        let reason = reason_of(parse(&document));
        assert!(reason.contains("too large"), "{reason}");
    }

    #[test]
    fn v2_key_encoding_is_rejected() {
        let reason = rejection("/chunk_key_encoding/name", Some(r#""v2""#));
        assert!(reason.contains("\"v2\" is not supported"), "{reason}");
    }

    #[test]
    fn dot_separator_is_rejected() {
        let reason = rejection(
            "/chunk_key_encoding/configuration",
            Some(r#"{"separator":"."}"#),
        );
        assert!(reason.contains("separator is \".\""), "{reason}");
    }

    #[test]
    fn slash_separator_is_accepted() {
        let document = kernel_with(
            "/chunk_key_encoding/configuration",
            Some(r#"{"separator":"/"}"#),
        );
        let metadata = parse(&document).unwrap();
        assert_eq!(metadata.to_json(), ORBAX_KERNEL.as_bytes());
    }

    #[test]
    fn unsharded_codecs_are_rejected() {
        let codecs = r#"[{"name":"bytes","configuration":{"endian":"little"}},{"name":"zstd","configuration":{"level":3,"checksum":false}}]"#;
        let reason = rejection("/codecs", Some(codecs));
        assert!(
            reason.contains(r#"codecs are ["bytes", "zstd"]"#),
            "{reason}"
        );
        let reason = rejection("/codecs", Some("[]"));
        assert!(reason.contains("codecs are []"), "{reason}");
    }

    #[test]
    fn unknown_codec_is_rejected() {
        let reason = rejection("/codecs/0", Some(r#"{"name":"blosc"}"#));
        assert!(reason.contains("unsupported codec \"blosc\""), "{reason}");
        let reason = rejection("/codecs/0", Some(r#""sharding_indexed""#));
        assert!(reason.contains("expected an object"), "{reason}");
        let reason = rejection("/codecs/0/must_understand", Some("false"));
        assert!(
            reason.contains("unknown field \"must_understand\""),
            "{reason}"
        );
    }

    #[test]
    fn sharding_without_configuration_is_rejected() {
        let reason = rejection(SHARDING, None);
        assert!(reason.contains("no configuration"), "{reason}");
        let reason = rejection(&format!("{SHARDING}/index_codecs"), None);
        assert!(reason.contains("has no \"index_codecs\""), "{reason}");
    }

    #[test]
    fn inner_chunk_shape_mismatch_is_rejected() {
        let reason = rejection(&format!("{SHARDING}/chunk_shape"), Some("[2,2]"));
        assert!(reason.contains("[2, 2] differs"), "{reason}");
    }

    #[test]
    fn index_at_start_is_rejected() {
        let reason = rejection(&format!("{SHARDING}/index_location"), Some(r#""start""#));
        assert!(reason.contains("index_location is \"start\""), "{reason}");
    }

    #[test]
    fn index_location_end_is_accepted() {
        let document = kernel_with(&format!("{SHARDING}/index_location"), Some(r#""end""#));
        assert!(parse(&document).is_ok());
    }

    #[test]
    fn index_without_crc_is_rejected() {
        let reason = rejection(&format!("{INDEX}/1"), None);
        assert!(reason.contains(r#"index_codecs are ["bytes"]"#), "{reason}");
        let reason = rejection(&format!("{INDEX}/1/configuration"), Some(r#"{"x":1}"#));
        assert!(reason.contains("takes none"), "{reason}");
    }

    #[test]
    fn big_endian_index_is_rejected() {
        let reason = rejection(
            &format!("{INDEX}/0/configuration"),
            Some(r#"{"endian":"big"}"#),
        );
        assert!(
            reason.contains("index \"bytes\" codec is big-endian"),
            "{reason}"
        );
    }

    #[test]
    fn unknown_inner_codec_is_rejected() {
        let reason = rejection(
            &format!("{INNER}/1"),
            Some(r#"{"name":"gzip","configuration":{"level":1}}"#),
        );
        assert!(
            reason.contains("unsupported inner codec \"gzip\""),
            "{reason}"
        );
        let reason = rejection(
            &format!("{INNER}/0"),
            Some(r#"{"name":"transpose","configuration":{"order":[1,0]}}"#),
        );
        assert!(
            reason.contains("unsupported inner codec \"transpose\""),
            "{reason}"
        );
        let reason = rejection(INNER, Some("[]"));
        assert!(reason.contains("are empty"), "{reason}");
    }

    #[test]
    fn extra_inner_codec_is_rejected() {
        let codecs = r#"[{"name":"bytes","configuration":{"endian":"little"}},{"name":"zstd","configuration":{"level":3,"checksum":false}},{"name":"crc32c"}]"#;
        let reason = rejection(INNER, Some(codecs));
        assert!(
            reason.contains(r#"["bytes", "zstd", "crc32c"]"#),
            "{reason}"
        );
    }

    #[test]
    fn big_endian_data_is_rejected() {
        let reason = rejection(
            &format!("{INNER}/0/configuration"),
            Some(r#"{"endian":"big"}"#),
        );
        assert!(
            reason.contains("inner \"bytes\" codec is big-endian"),
            "{reason}"
        );
        let reason = rejection(
            &format!("{INNER}/0/configuration"),
            Some(r#"{"endian":"middle"}"#),
        );
        assert!(
            reason.contains("expected \"little\" or \"big\""),
            "{reason}"
        );
    }

    #[test]
    fn missing_endian_is_rejected() {
        let reason = rejection(&format!("{INNER}/0/configuration"), None);
        assert!(reason.contains("no \"endian\""), "{reason}");
    }

    #[test]
    fn one_byte_endian_is_optional() {
        let document = kernel_with("/data_type", Some(r#""uint8""#));
        let document = edit(&document, "/fill_value", Some("0"));
        assert!(parse(&document).is_ok());
        let document = edit(&document, &format!("{INNER}/0/configuration"), None);
        assert!(parse(&document).is_ok());
    }

    #[test]
    fn bad_zstd_configuration_is_rejected() {
        let zstd = format!("{INNER}/1/configuration");
        let reason = rejection(&format!("{zstd}/checksum"), None);
        assert!(reason.contains("no \"checksum\""), "{reason}");
        let reason = rejection(&format!("{zstd}/checksum"), Some("0"));
        assert!(reason.contains("checksum is 0"), "{reason}");
        let reason = rejection(&format!("{zstd}/level"), Some("3.5"));
        assert!(reason.contains("expected an integer"), "{reason}");
        let reason = rejection(&format!("{zstd}/level"), Some("1000"));
        assert!(reason.contains("zstd level 1000 is outside"), "{reason}");
        let reason = rejection(&format!("{zstd}/threads"), Some("2"));
        assert!(reason.contains("unknown field \"threads\""), "{reason}");
        let reason = rejection(&zstd, None);
        assert!(
            reason.contains("\"zstd\" codec has no configuration"),
            "{reason}"
        );
    }

    #[test]
    fn uncompressed_is_accepted() {
        let document = kernel_with(&format!("{INNER}/1"), None);
        let metadata = parse(&document).unwrap();
        assert_eq!(metadata.compressor(), None);
    }

    #[test]
    fn fill_value_of_wrong_type_is_rejected() {
        let reason = rejection("/fill_value", Some("false"));
        assert!(reason.contains("not a valid float32 value"), "{reason}");
        let reason = rejection("/fill_value", Some(r#""zero""#));
        assert!(reason.contains("not a valid float32 value"), "{reason}");
    }

    #[test]
    fn nonzero_fill_value_is_rejected() {
        for value in ["1.5", "-0.0", r#""NaN""#, r#""0x7fc00000""#] {
            let reason = rejection("/fill_value", Some(value));
            assert!(
                reason.contains("ckpt reads only the zero fill value"),
                "{value}: {reason}"
            );
        }
    }

    #[test]
    fn integer_zero_fill_for_float_is_accepted() {
        assert!(parse(&kernel_with("/fill_value", Some("0"))).is_ok());
    }

    #[test]
    fn integer_fill_values() {
        let document = kernel_with("/data_type", Some(r#""uint8""#));
        let reason = reason_of(parse(&edit(&document, "/fill_value", Some("0.0"))));
        assert!(reason.contains("not a valid uint8 value"), "{reason}");
        let reason = reason_of(parse(&edit(&document, "/fill_value", Some("256"))));
        assert!(reason.contains("not a valid uint8 value"), "{reason}");
        let reason = reason_of(parse(&edit(&document, "/fill_value", Some("255"))));
        assert!(reason.contains("ckpt reads only the zero"), "{reason}");

        let document = kernel_with("/data_type", Some(r#""int4""#));
        let reason = reason_of(parse(&edit(&document, "/fill_value", Some("-9"))));
        assert!(reason.contains("not a valid int4 value"), "{reason}");
        let reason = reason_of(parse(&edit(&document, "/fill_value", Some("-8"))));
        assert!(reason.contains("ckpt reads only the zero"), "{reason}");
    }

    #[test]
    fn bool_and_complex_fill_values() {
        let document = kernel_with("/data_type", Some(r#""bool""#));
        let reason = reason_of(parse(&edit(&document, "/fill_value", Some("0"))));
        assert!(reason.contains("not a valid bool value"), "{reason}");
        let reason = reason_of(parse(&edit(&document, "/fill_value", Some("true"))));
        assert!(reason.contains("ckpt reads only the zero"), "{reason}");

        let document = kernel_with("/data_type", Some(r#""complex64""#));
        let reason = reason_of(parse(&edit(&document, "/fill_value", Some("[0.0]"))));
        assert!(reason.contains("array of two numbers"), "{reason}");
        let reason = reason_of(parse(&edit(&document, "/fill_value", Some("[0.0,1.0]"))));
        assert!(reason.contains("ckpt reads only the zero"), "{reason}");
        assert!(parse(&edit(&document, "/fill_value", Some("[0.0,0]"))).is_ok());
    }

    #[test]
    fn optional_fields_are_checked() {
        let reason = rejection("/attributes", Some("[]"));
        assert!(reason.contains("attributes is []"), "{reason}");
        let reason = rejection("/dimension_names", Some(r#"["x"]"#));
        assert!(reason.contains("2 strings or nulls"), "{reason}");
        let reason = rejection("/storage_transformers", Some(r#"[{"name":"x"}]"#));
        assert!(reason.contains("storage transformers"), "{reason}");
    }

    #[test]
    fn optional_fields_are_dropped() {
        let document = kernel_with("/attributes", Some(r#"{"note":"x"}"#));
        let document = edit(&document, "/dimension_names", Some(r#"["x",null]"#));
        let document = edit(&document, "/storage_transformers", Some("[]"));
        let metadata = parse(&document).unwrap();
        assert_eq!(metadata.to_json(), ORBAX_KERNEL.as_bytes());
    }
}
