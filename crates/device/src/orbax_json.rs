//! The JSON text Orbax stores per array in a checkpoint's `_sharding` file.
//!
//! Orbax (`orbax/checkpoint/_src/metadata/sharding.py` in orbax-checkpoint 0.12)
//! serializes a sharding with Python's `json.dumps` defaults, and the
//! `_sharding` file stores that text as a JSON string value. Writing the
//! same bytes therefore means following `json.dumps`: `", "` and `": "` as
//! separators, and every character outside printable ASCII escaped as
//! `\uXXXX` with lowercase hex.

use serde_json::{Map, Value};

use crate::{AxisType, DeviceError, DeviceId, Mesh, PartitionDim, PartitionSpec, Sharding};

const NAMED_SHARDING: &str = "NamedSharding";
const SINGLE_DEVICE_SHARDING: &str = "SingleDeviceSharding";

/// Mesh axis name used when a [`Sharding::Replicated`] is written as a one-axis mesh.
const REPLICATED_AXIS: &str = "replica";

impl Sharding {
    /// Encodes the sharding as the JSON text Orbax writes for it in `_sharding`.
    ///
    /// A named sharding becomes a `NamedSharding` with its mesh's device ids.
    /// A replicated sharding becomes a `NamedSharding` with the empty
    /// partition spec on a one-axis mesh named `"replica"`, so it reads back
    /// as [`Sharding::Named`]. A single-device sharding becomes a
    /// `SingleDeviceSharding` with `device_str` `"cpu:<id>"`. Use
    /// [`Sharding::to_orbax_json_for_platform`] for other platforms.
    pub fn to_orbax_json(&self) -> String {
        self.to_orbax_json_for_platform("cpu")
    }

    /// Encodes the sharding as [`Sharding::to_orbax_json`] does, naming `platform` in `device_str`.
    ///
    /// JAX 0.10 prints a device as `"<platform>:<id>"`, such as `"cuda:0"`.
    pub fn to_orbax_json_for_platform(&self, platform: &str) -> String {
        let mut out = String::new();
        match self {
            Sharding::Named { mesh, spec } => write_named(&mut out, mesh, spec),
            Sharding::Replicated { devices } => {
                let axis_names = [REPLICATED_AXIS.to_owned()];
                let axis_types = [AxisType::Auto];
                let layout = MeshLayout {
                    shape: &[devices.len()],
                    axis_names: &axis_names,
                    axis_types: &axis_types,
                    devices,
                };
                write_named_parts(&mut out, &layout, &PartitionSpec::replicated());
            }
            Sharding::SingleDevice(device) => {
                out.push_str("{\"sharding_type\": ");
                push_python_string(&mut out, SINGLE_DEVICE_SHARDING);
                out.push_str(", \"device_str\": ");
                push_python_string(&mut out, &format!("{platform}:{device}"));
                out.push('}');
            }
        }
        out
    }

    /// Parses the JSON text of one `_sharding` entry.
    ///
    /// Reads `NamedSharding` (with or without `axis_types`, which default to
    /// [`AxisType::Auto`]) and `SingleDeviceSharding`, whose `device_str` may
    /// be `"<platform>:<id>"` or the older `"TFRT_CPU_<id>"`.
    pub fn from_orbax_json(text: &str) -> Result<Sharding, DeviceError> {
        let value: Value =
            serde_json::from_str(text).map_err(|source| DeviceError::ShardingJson { source })?;
        let Some(object) = value.as_object() else {
            return Err(field_error("", "a JSON object"));
        };
        let sharding_type = object
            .get("sharding_type")
            .and_then(Value::as_str)
            .ok_or_else(|| field_error("sharding_type", "a string"))?;
        match sharding_type {
            NAMED_SHARDING => parse_named(object),
            SINGLE_DEVICE_SHARDING => parse_single_device(object),
            other => Err(DeviceError::UnknownShardingType {
                sharding_type: other.to_owned(),
            }),
        }
    }
}

/// The parts of a mesh that a `NamedSharding` entry stores.
struct MeshLayout<'a> {
    shape: &'a [usize],
    axis_names: &'a [String],
    axis_types: &'a [AxisType],
    devices: &'a [DeviceId],
}

fn write_named(out: &mut String, mesh: &Mesh, spec: &PartitionSpec) {
    let layout = MeshLayout {
        shape: mesh.shape(),
        axis_names: mesh.axis_names(),
        axis_types: mesh.axis_types(),
        devices: mesh.devices(),
    };
    write_named_parts(out, &layout, spec);
}

fn write_named_parts(out: &mut String, layout: &MeshLayout<'_>, spec: &PartitionSpec) {
    out.push_str("{\"sharding_type\": ");
    push_python_string(out, NAMED_SHARDING);

    out.push_str(", \"shape\": ");
    push_list(out, layout.shape, |out, extent| {
        out.push_str(&extent.to_string())
    });

    out.push_str(", \"axis_names\": ");
    push_list(out, layout.axis_names, |out, name| {
        push_python_string(out, name)
    });

    out.push_str(", \"axis_types\": ");
    push_list(out, layout.axis_types, |out, axis_type| {
        push_python_string(out, axis_type.orbax_name())
    });

    out.push_str(", \"partition_spec\": ");
    push_list(out, spec.dims(), |out, dim| match dim {
        PartitionDim::Unsharded => out.push_str("null"),
        PartitionDim::Axis(name) => push_python_string(out, name),
        PartitionDim::Axes(names) => {
            push_list(out, names, |out, name| push_python_string(out, name))
        }
    });

    out.push_str(", \"device_mesh\": {\"mesh\": ");
    push_device_mesh(out, layout.shape, layout.devices);
    out.push_str("}}");
}

/// Writes `devices` as nested lists of `{"id": n}` in the mesh shape, as NumPy's `tolist` nests them.
fn push_device_mesh(out: &mut String, shape: &[usize], devices: &[DeviceId]) {
    let Some((&extent, inner_shape)) = shape.split_first() else {
        // A mesh with no axes contains one device, which `tolist` returns bare.
        if let Some(device) = devices.first() {
            out.push_str(&format!("{{\"id\": {device}}}"));
        }
        return;
    };
    // Meshes are validated, so `devices` splits evenly along the first axis.
    let stride = devices.len().checked_div(extent).unwrap_or(0);
    out.push('[');
    for index in 0..extent {
        if index > 0 {
            out.push_str(", ");
        }
        let start = index * stride;
        let part = devices.get(start..start + stride).unwrap_or_default();
        push_device_mesh(out, inner_shape, part);
    }
    out.push(']');
}

fn push_list<T>(out: &mut String, items: &[T], mut push_item: impl FnMut(&mut String, &T)) {
    out.push('[');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push_str(", ");
        }
        push_item(out, item);
    }
    out.push(']');
}

/// Writes `text` as a JSON string the way Python's `json.dumps` does with `ensure_ascii=True`.
fn push_python_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                // Characters outside the BMP become a UTF-16 surrogate pair.
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

fn field_error(field: &'static str, expected: &'static str) -> DeviceError {
    DeviceError::ShardingJsonField { field, expected }
}

fn parse_named(object: &Map<String, Value>) -> Result<Sharding, DeviceError> {
    let shape = object
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| field_error("shape", "a list of mesh extents"))?
        .iter()
        .map(|extent| extent.as_u64().and_then(|n| usize::try_from(n).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| field_error("shape", "a list of non-negative integers"))?;

    let axis_names = parse_string_list(object.get("axis_names"))
        .ok_or_else(|| field_error("axis_names", "a list of strings"))?;

    // Orbax writes `axis_types` since JAX added them and reads entries without them.
    let axis_types = match object.get("axis_types") {
        None | Some(Value::Null) => None,
        Some(value) => {
            let names = parse_string_list(Some(value))
                .ok_or_else(|| field_error("axis_types", "a list of strings"))?;
            let types = names
                .iter()
                .map(|name| name.parse::<AxisType>())
                .collect::<Result<Vec<AxisType>, DeviceError>>()?;
            Some(types)
        }
    };

    let spec = parse_partition_spec(object.get("partition_spec"))?;

    // NOTE: Orbax falls back to `jax.devices()` when `device_mesh` is absent.
    // This crate has no device list to fall back to, so it rejects the entry
    // and the caller must supply a target sharding instead.
    let mesh_value = object
        .get("device_mesh")
        .and_then(Value::as_object)
        .and_then(|device_mesh| device_mesh.get("mesh"))
        .ok_or_else(|| field_error("device_mesh.mesh", "nested lists of {\"id\": n} objects"))?;
    let mut devices = Vec::new();
    collect_device_mesh(mesh_value, &shape, &mut devices)?;

    let mut mesh = Mesh::new(shape, axis_names, devices)?;
    if let Some(axis_types) = axis_types {
        mesh = mesh.with_axis_types(axis_types)?;
    }
    Sharding::named(mesh, spec)
}

fn parse_string_list(value: Option<&Value>) -> Option<Vec<String>> {
    value?
        .as_array()?
        .iter()
        .map(|item| item.as_str().map(str::to_owned))
        .collect()
}

fn parse_partition_spec(value: Option<&Value>) -> Result<PartitionSpec, DeviceError> {
    let expected = "a list whose entries are null, an axis name or a list of axis names";
    let entries = value
        .and_then(Value::as_array)
        .ok_or_else(|| field_error("partition_spec", expected))?;
    let mut dims = Vec::with_capacity(entries.len());
    for entry in entries {
        let dim = match entry {
            Value::Null => PartitionDim::Unsharded,
            Value::String(name) => PartitionDim::Axis(name.clone()),
            Value::Array(_) => PartitionDim::Axes(
                parse_string_list(Some(entry))
                    .ok_or_else(|| field_error("partition_spec", expected))?,
            ),
            _ => return Err(field_error("partition_spec", expected)),
        };
        dims.push(dim);
    }
    Ok(PartitionSpec::from_dims(dims))
}

/// Appends the device ids of a nested `device_mesh` list in row-major order, checking its shape.
///
/// The recursion depth is the length of `shape`, and serde_json has already
/// bounded the nesting depth of `value`.
fn collect_device_mesh(
    value: &Value,
    shape: &[usize],
    devices: &mut Vec<DeviceId>,
) -> Result<(), DeviceError> {
    let layout_error = || DeviceError::DeviceMeshLayout {
        shape: shape.to_vec(),
    };
    let Some((&extent, inner_shape)) = shape.split_first() else {
        let id = value
            .as_object()
            .and_then(|device| device.get("id"))
            .and_then(Value::as_u64)
            .ok_or_else(layout_error)?;
        let id = u32::try_from(id)
            .map_err(|_| field_error("device_mesh.mesh", "device ids below 2^32"))?;
        devices.push(DeviceId(id));
        return Ok(());
    };
    let items = value.as_array().ok_or_else(layout_error)?;
    if items.len() != extent {
        return Err(layout_error());
    }
    for item in items {
        collect_device_mesh(item, inner_shape, devices)?;
    }
    Ok(())
}

fn parse_single_device(object: &Map<String, Value>) -> Result<Sharding, DeviceError> {
    let device_str = object
        .get("device_str")
        .and_then(Value::as_str)
        .ok_or_else(|| field_error("device_str", "a string such as \"cpu:3\""))?;
    let id = parse_device_id(device_str).ok_or_else(|| DeviceError::InvalidDeviceString {
        device_str: device_str.to_owned(),
    })?;
    Ok(Sharding::SingleDevice(id))
}

/// Reads the device id from JAX's `str(device)`: `"cpu:3"` since JAX 0.10, `"TFRT_CPU_3"` before.
///
/// NOTE: only the CPU spellings have been seen in checkpoints. Other
/// platforms are assumed to follow `"<platform>:<id>"` and are rejected otherwise.
fn parse_device_id(device_str: &str) -> Option<DeviceId> {
    let digits = match device_str.rsplit_once(':') {
        Some((platform, digits)) if !platform.is_empty() => digits,
        _ => device_str.strip_prefix("TFRT_CPU_")?,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u32>().ok().map(DeviceId)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ids(count: u32) -> Vec<DeviceId> {
        (0..count).map(DeviceId).collect()
    }

    fn fixture(path: &str) -> Map<String, Value> {
        let path = format!("{}/../../testdata/orbax/{path}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// Parses every entry of a fixture's `_sharding` file and returns (entry text, re-encoded text).
    fn reencode_fixture(path: &str) -> Vec<(String, String)> {
        fixture(path)
            .into_iter()
            .map(|(_, value)| {
                let text = value.as_str().unwrap().to_owned();
                let sharding = Sharding::from_orbax_json(&text).unwrap();
                (text, sharding.to_orbax_json())
            })
            .collect()
    }

    #[test]
    fn fixture_named_reencodes_exactly() {
        let entries = reencode_fixture("a_pytree_ocdbt/ckpt/_sharding");
        assert_eq!(entries.len(), 2);
        for (original, encoded) in entries {
            let original_value: Value = serde_json::from_str(&original).unwrap();
            let encoded_value: Value = serde_json::from_str(&encoded).unwrap();
            assert_eq!(encoded_value, original_value);
            assert_eq!(encoded, original);
        }
    }

    #[test]
    fn fixture_kernel_is_split_4x2() {
        let entries = fixture("a_pytree_ocdbt/ckpt/_sharding");
        // The member name is the URL-safe base64 of "params.dense.kernel".
        let text = entries["cGFyYW1zLmRlbnNlLmtlcm5lbA=="].as_str().unwrap();
        let sharding = Sharding::from_orbax_json(text).unwrap();
        let mesh = Mesh::new(vec![4, 2], ["x", "y"], ids(8)).unwrap();
        let expected = Sharding::named(mesh, PartitionSpec::new([Some("x"), Some("y")])).unwrap();
        assert_eq!(sharding, expected);
    }

    #[test]
    fn fixture_single_device_and_unsharded_entries() {
        for path in [
            "g_scalars_empty/ckpt/_sharding",
            "d_manager/ckpt/1/state/_sharding",
        ] {
            for (original, encoded) in reencode_fixture(path) {
                assert_eq!(encoded, original, "fixture {path}");
            }
        }
    }

    #[test]
    fn fixture_without_axis_types() {
        for (original, encoded) in reencode_fixture("m_foreign_minimal/ckpt/_sharding") {
            let mut original_value: Value = serde_json::from_str(&original).unwrap();
            let encoded_value: Value = serde_json::from_str(&encoded).unwrap();
            // The entry omits axis_types, and the encoder writes the default.
            original_value["axis_types"] = serde_json::json!(["AxisType.Auto", "AxisType.Auto"]);
            assert_eq!(encoded_value, original_value);
        }
    }

    #[test]
    fn single_device_format() {
        let sharding = Sharding::single_device(DeviceId(3));
        assert_eq!(
            sharding.to_orbax_json(),
            r#"{"sharding_type": "SingleDeviceSharding", "device_str": "cpu:3"}"#
        );
        let gpu = sharding.to_orbax_json_for_platform("cuda");
        assert!(gpu.contains(r#""device_str": "cuda:3""#));
    }

    #[test]
    fn single_device_strings() {
        for (device_str, id) in [("cpu:3", 3), ("TFRT_CPU_12", 12), ("cuda:0", 0)] {
            let text = format!(
                r#"{{"sharding_type": "SingleDeviceSharding", "device_str": "{device_str}"}}"#
            );
            let sharding = Sharding::from_orbax_json(&text).unwrap();
            assert_eq!(
                sharding,
                Sharding::SingleDevice(DeviceId(id)),
                "{device_str}"
            );
        }
    }

    #[test]
    fn invalid_device_strings() {
        for device_str in [
            "cpu",
            "cpu:",
            ":3",
            "cpu:-1",
            "cpu:+1",
            "cpu:99999999999",
            "TPU_0",
        ] {
            let text = format!(
                r#"{{"sharding_type": "SingleDeviceSharding", "device_str": "{device_str}"}}"#
            );
            let err = Sharding::from_orbax_json(&text).unwrap_err();
            assert!(
                matches!(err, DeviceError::InvalidDeviceString { .. }),
                "{device_str}: {err}"
            );
        }
    }

    #[test]
    fn replicated_writes_one_axis_mesh() {
        let sharding = Sharding::replicated(vec![DeviceId(2), DeviceId(0)]).unwrap();
        assert_eq!(
            sharding.to_orbax_json(),
            r#"{"sharding_type": "NamedSharding", "shape": [2], "axis_names": ["replica"], "axis_types": ["AxisType.Auto"], "partition_spec": [], "device_mesh": {"mesh": [{"id": 2}, {"id": 0}]}}"#
        );
        let read = Sharding::from_orbax_json(&sharding.to_orbax_json()).unwrap();
        assert!(read.is_fully_replicated());
        assert_eq!(read.devices(), &[DeviceId(2), DeviceId(0)]);
    }

    #[test]
    fn multi_axis_spec_round_trip() {
        let mesh = Mesh::new(vec![2, 2, 2], ["a", "b", "c"], ids(8))
            .unwrap()
            .with_axis_types(vec![AxisType::Explicit, AxisType::Auto, AxisType::Manual])
            .unwrap();
        let spec = PartitionSpec::from_dims([
            PartitionDim::axes(["c", "a"]),
            PartitionDim::Unsharded,
            PartitionDim::axes(["b"]),
        ]);
        let sharding = Sharding::named(mesh, spec).unwrap();
        let text = sharding.to_orbax_json();
        assert!(
            text.contains(r#""partition_spec": [["c", "a"], null, ["b"]]"#),
            "{text}"
        );
        assert_eq!(Sharding::from_orbax_json(&text).unwrap(), sharding);
    }

    #[test]
    fn scalar_mesh_round_trip() {
        let mesh = Mesh::new(Vec::new(), Vec::<String>::new(), vec![DeviceId(5)]).unwrap();
        let sharding = Sharding::named(mesh, PartitionSpec::replicated()).unwrap();
        let text = sharding.to_orbax_json();
        assert!(
            text.ends_with(r#""device_mesh": {"mesh": {"id": 5}}}"#),
            "{text}"
        );
        assert_eq!(Sharding::from_orbax_json(&text).unwrap(), sharding);
    }

    #[test]
    fn axis_names_escaped_like_python() {
        let mesh = Mesh::new(vec![1, 1], ["é\"", "\u{1F600}\u{7f}"], ids(1)).unwrap();
        let sharding = Sharding::named(mesh, PartitionSpec::replicated()).unwrap();
        let text = sharding.to_orbax_json();
        assert!(
            text.contains(r#""axis_names": ["\u00e9\"", "\ud83d\ude00\u007f"]"#),
            "{text}"
        );
        assert_eq!(Sharding::from_orbax_json(&text).unwrap(), sharding);
    }

    #[test]
    fn not_json() {
        let err = Sharding::from_orbax_json("{\"sharding_type\": ").unwrap_err();
        assert!(matches!(err, DeviceError::ShardingJson { .. }));
    }

    #[test]
    fn not_an_object() {
        let err = Sharding::from_orbax_json("[1, 2]").unwrap_err();
        assert!(matches!(err, DeviceError::ShardingJsonField { .. }));
    }

    #[test]
    fn unknown_sharding_type() {
        let err =
            Sharding::from_orbax_json(r#"{"sharding_type": "PositionalSharding"}"#).unwrap_err();
        assert!(
            matches!(err, DeviceError::UnknownShardingType { sharding_type } if sharding_type == "PositionalSharding")
        );
    }

    #[test]
    fn unknown_axis_type() {
        let text = r#"{"sharding_type": "NamedSharding", "shape": [1], "axis_names": ["x"], "axis_types": ["AxisType.Other"], "partition_spec": [], "device_mesh": {"mesh": [{"id": 0}]}}"#;
        let err = Sharding::from_orbax_json(text).unwrap_err();
        assert!(matches!(err, DeviceError::UnknownAxisType { .. }));
    }

    /// Builds a valid NamedSharding entry with one field replaced by `replacement`, or removed if it is null.
    fn named_with(field: &str, replacement: Value) -> String {
        let mut value = serde_json::json!({
            "sharding_type": "NamedSharding",
            "shape": [2, 1],
            "axis_names": ["x", "y"],
            "partition_spec": ["x"],
            "device_mesh": {"mesh": [[{"id": 0}], [{"id": 1}]]},
        });
        if replacement.is_null() && field != "partition_spec" {
            value.as_object_mut().unwrap().remove(field);
        } else {
            value[field] = replacement;
        }
        value.to_string()
    }

    #[test]
    fn named_base_entry_parses() {
        let sharding =
            Sharding::from_orbax_json(&named_with("shape", serde_json::json!([2, 1]))).unwrap();
        assert_eq!(sharding.devices(), &[DeviceId(0), DeviceId(1)]);
    }

    #[test]
    fn invalid_named_fields() {
        use serde_json::json;
        let cases = [
            ("shape", json!(null)),
            ("shape", json!([2, -1])),
            ("shape", json!([2.5, 1])),
            ("axis_names", json!("x")),
            ("axis_names", json!([1, 2])),
            ("axis_types", json!("AxisType.Auto")),
            ("partition_spec", json!(null)),
            ("partition_spec", json!([1])),
            ("partition_spec", json!([["x", 2]])),
            ("device_mesh", json!(null)),
            ("device_mesh", json!({"devices": []})),
        ];
        for (field, replacement) in cases {
            let text = named_with(field, replacement.clone());
            let err = Sharding::from_orbax_json(&text).unwrap_err();
            assert!(
                matches!(err, DeviceError::ShardingJsonField { .. }),
                "{field} = {replacement}: {err}"
            );
        }
    }

    #[test]
    fn device_mesh_layout_mismatch() {
        use serde_json::json;
        let cases = [
            json!({"mesh": [{"id": 0}, {"id": 1}]}),
            json!({"mesh": [[{"id": 0}]]}),
            json!({"mesh": [[{"id": 0}, {"id": 2}], [{"id": 1}]]}),
            json!({"mesh": [[{"id": -1}], [{"id": 1}]]}),
            json!({"mesh": [[{"name": 0}], [{"id": 1}]]}),
        ];
        for device_mesh in cases {
            let text = named_with("device_mesh", device_mesh.clone());
            let err = Sharding::from_orbax_json(&text).unwrap_err();
            assert!(
                matches!(err, DeviceError::DeviceMeshLayout { .. }),
                "{device_mesh}: {err}"
            );
        }
    }

    #[test]
    fn device_id_too_large() {
        let text = named_with(
            "device_mesh",
            serde_json::json!({"mesh": [[{"id": 0}], [{"id": 4294967296u64}]]}),
        );
        let err = Sharding::from_orbax_json(&text).unwrap_err();
        assert!(matches!(err, DeviceError::ShardingJsonField { .. }));
    }

    #[test]
    fn invalid_mesh_and_spec_rejected() {
        use serde_json::json;
        let duplicate = named_with("device_mesh", json!({"mesh": [[{"id": 0}], [{"id": 0}]]}));
        let err = Sharding::from_orbax_json(&duplicate).unwrap_err();
        assert!(matches!(err, DeviceError::DuplicateDevice { .. }));

        let unknown = named_with("partition_spec", json!(["z"]));
        let err = Sharding::from_orbax_json(&unknown).unwrap_err();
        assert!(matches!(err, DeviceError::UnknownAxis { .. }));

        let huge = named_with("shape", json!([u64::MAX, 2]));
        let err = Sharding::from_orbax_json(&huge).unwrap_err();
        assert!(matches!(
            err,
            DeviceError::DeviceMeshLayout { .. } | DeviceError::MeshSizeMismatch { .. }
        ));
    }

    /// Generates any JSON value, biased toward the shapes a `NamedSharding` entry contains.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (0u64..10).prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            prop::sample::select(vec!["x", "y", "", "AxisType.Auto", "cpu:1"])
                .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(inner, 0..3).prop_map(|ids| {
                    Value::Array(
                        ids.into_iter()
                            .map(|id| serde_json::json!({ "id": id }))
                            .collect(),
                    )
                }),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn hostile_named_entries_do_not_panic(
            shape in json_value(),
            axis_names in json_value(),
            axis_types in json_value(),
            spec in json_value(),
            mesh in json_value(),
        ) {
            let text = serde_json::json!({
                "sharding_type": "NamedSharding",
                "shape": shape,
                "axis_names": axis_names,
                "axis_types": axis_types,
                "partition_spec": spec,
                "device_mesh": {"mesh": mesh},
            })
            .to_string();
            if let Ok(sharding) = Sharding::from_orbax_json(&text) {
                let again = Sharding::from_orbax_json(&sharding.to_orbax_json()).unwrap();
                proptest::prop_assert_eq!(again, sharding);
            }
        }

        #[test]
        fn arbitrary_text_does_not_panic(text in ".{0,64}") {
            proptest::prop_assert!(Sharding::from_orbax_json(&text).is_err());
        }
    }

    #[test]
    fn deep_nesting_is_an_error() {
        let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let err = Sharding::from_orbax_json(&text).unwrap_err();
        assert!(matches!(err, DeviceError::ShardingJson { .. }));
    }
}
