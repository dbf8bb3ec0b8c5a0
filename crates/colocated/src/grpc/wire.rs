//! The protobuf messages of the worker and coordination services, written
//! with prost's derive macros instead of generated from `.proto` files, so
//! the build needs no `protoc`.
//!
//! The field numbers are the wire contract: a changed or reused tag breaks
//! workers and controllers of different builds. [`WORKER_PROTO`] is the same
//! schema in `.proto` syntax, for readers and for other gRPC clients.
//!
//! Requests describe arrays, boxes and storage locations; array bytes travel
//! only in [`ShardPiece`]s, each at most one piece long.

use bytes::Bytes;
use ckpt_core::{DType, IndexBox};
use ckpt_device::Sharding;
use ckpt_storage::{ArrayFormat, Compression, StoredArray, Store};
use tonic::Status;

use crate::protocol::{
    ArrayId, ArraySpec, ReplicaSlicing, RestoreItem, SaveItem, SaveReport, VerifyReport,
};

/// The schema of the worker and coordination services in `.proto` syntax,
/// for other gRPC clients. The prost structs in this module define the
/// wire format, and this text mirrors them.
pub const WORKER_PROTO: &str = r#"
syntax = "proto3";
package ckpt.worker.v1;

service Worker {
  rpc Health(Empty) returns (HealthReply);
  rpc OpenSession(OpenSessionRequest) returns (Empty);
  rpc EndSession(SessionRequest) returns (Empty);
  rpc Call(CallRequest) returns (CallReply);
  rpc PutShards(stream PutMessage) returns (Empty);
  rpc FetchShards(FetchRequest) returns (stream ShardPiece);
  rpc InjectFaults(FaultsRequest) returns (Empty);
  rpc Shutdown(Empty) returns (Empty);
}

message Empty {}
message HealthReply {
  uint64 host = 1; uint32 pid = 2; string address = 3; uint64 sessions = 4;
  uint64 calls_in_flight = 5; uint64 saves_in_flight = 6;
  uint64 calls_completed = 7; uint64 calls_cancelled = 8;
}
message OpenSessionRequest { uint64 session = 1; string topology_json = 2; }
message SessionRequest { uint64 session = 1; }
message FaultsRequest { uint64 save_delay_ms = 1; }

message ArraySpec { repeated uint64 shape = 1; string dtype = 2; string sharding_json = 3; }
message StoredArray { repeated uint64 shape = 1; string dtype = 2; repeated uint64 chunk_shape = 3; }
message Format { bool use_ocdbt = 1; bool use_zarr3 = 2; optional int32 zstd_level = 3; }
message ReplicaSlicing { uint64 axis = 1; uint32 replicas = 2; }
message SaveItem {
  uint64 id = 1; string param_name = 2; StoredArray stored = 3; bool create_metadata = 4;
  repeated uint64 write_shape = 5; ReplicaSlicing replica_slicing = 6;
}
message RestoreItem { uint64 id = 1; string param_name = 2; ArraySpec spec = 3; bool allow_lossy_cast = 4; }

message PutGenerated { uint64 id = 1; ArraySpec spec = 2; uint64 seed = 3; }
message SaveShards { string location = 1; Format format = 2; repeated SaveItem items = 3; }
message RestoreShards { string location = 1; optional bool use_ocdbt = 2; repeated RestoreItem items = 3; bool use_zarr3 = 4; }
message Verify { uint64 id = 1; uint64 seed = 2; }
message DropArrays { repeated uint64 ids = 1; }
message ArrayPair { uint64 source = 1; uint64 copy = 2; }
message SnapshotArrays { repeated ArrayPair arrays = 1; }
message CallRequest {
  uint64 session = 1;
  oneof call {
    PutGenerated put_generated = 2; SaveShards save_shards = 3;
    RestoreShards restore_shards = 4; Verify verify = 5; DropArrays drop_arrays = 6;
    SnapshotArrays snapshot_arrays = 7;
  }
}
message SaveReport { uint64 bytes = 1; uint64 chunks = 2; }
message VerifyReport { uint64 elements = 1; uint64 mismatches = 2; }
message CallReply {
  oneof reply { Empty done = 1; SaveReport saved = 2; uint64 restored_bytes = 3; VerifyReport verified = 4; }
}

message ShardPiece {
  uint64 array_id = 1; repeated uint64 start = 2; repeated uint64 stop = 3;
  uint64 total_bytes = 4; uint64 offset = 5; bytes data = 6;
}
message PutHeader { uint64 session = 1; uint64 array_id = 2; ArraySpec spec = 3; }
message PutMessage { oneof kind { PutHeader header = 1; ShardPiece piece = 2; } }
message FetchRequest { uint64 session = 1; repeated uint64 ids = 2; uint64 piece_bytes = 3; }

service Coordinator {
  rpc Join(JoinRequest) returns (stream Empty);
  rpc Barrier(BarrierRequest) returns (BarrierReply);
}
message JoinRequest { uint64 process_index = 1; }
message BarrierRequest {
  string barrier_id = 1; uint64 process_index = 2; uint64 timeout_ms = 3;
  optional string error = 4; string value = 5;
}
message BarrierReply {
  bool ok = 1; repeated string values = 2; optional uint64 failed_process = 3;
  string reason = 4; repeated uint64 missing = 5;
}
"#;

/// A message without fields.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub(crate) struct Empty {}

/// The state of a worker.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct HealthReply {
    /// The worker's host index.
    #[prost(uint64, tag = "1")]
    pub(crate) host: u64,
    /// The worker's process id.
    #[prost(uint32, tag = "2")]
    pub(crate) pid: u32,
    /// The address the worker listens on.
    #[prost(string, tag = "3")]
    pub(crate) address: String,
    /// Open controller sessions.
    #[prost(uint64, tag = "4")]
    pub(crate) sessions: u64,
    /// Requests being served.
    #[prost(uint64, tag = "5")]
    pub(crate) calls_in_flight: u64,
    /// Save shards and fetch shards requests being served.
    #[prost(uint64, tag = "6")]
    pub(crate) saves_in_flight: u64,
    /// Requests that finished, with success or with an error.
    #[prost(uint64, tag = "7")]
    pub(crate) calls_completed: u64,
    /// Requests whose caller went away or whose deadline passed before they finished.
    #[prost(uint64, tag = "8")]
    pub(crate) calls_cancelled: u64,
}

/// Opens a controller session: the arrays a controller creates live in it.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct OpenSessionRequest {
    /// The session id, chosen at random by the controller.
    #[prost(uint64, tag = "1")]
    pub(crate) session: u64,
    /// The controller's topology as JSON (serde form of `Topology`).
    #[prost(string, tag = "2")]
    pub(crate) topology_json: String,
}

/// Names a session.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub(crate) struct SessionRequest {
    /// The session id.
    #[prost(uint64, tag = "1")]
    pub(crate) session: u64,
}

/// Faults a worker injects into its own work, for tests.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub(crate) struct FaultsRequest {
    /// Time each later save shards or fetch shards request waits before it
    /// starts, in milliseconds.
    #[prost(uint64, tag = "1")]
    pub(crate) save_delay_ms: u64,
}

/// Wire form of [`ArraySpec`]: the sharding travels as its serde JSON.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct WireArraySpec {
    /// Global shape.
    #[prost(uint64, repeated, tag = "1")]
    pub(crate) shape: Vec<u64>,
    /// NumPy name of the dtype.
    #[prost(string, tag = "2")]
    pub(crate) dtype: String,
    /// The sharding, including its mesh, as serde JSON.
    #[prost(string, tag = "3")]
    pub(crate) sharding_json: String,
}

/// Wire form of [`StoredArray`].
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct WireStoredArray {
    /// Global shape.
    #[prost(uint64, repeated, tag = "1")]
    pub(crate) shape: Vec<u64>,
    /// NumPy name of the dtype.
    #[prost(string, tag = "2")]
    pub(crate) dtype: String,
    /// Chunk shape.
    #[prost(uint64, repeated, tag = "3")]
    pub(crate) chunk_shape: Vec<u64>,
}

/// Wire form of [`ArrayFormat`].
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub(crate) struct WireFormat {
    /// Whether arrays go into OCDBT databases.
    #[prost(bool, tag = "1")]
    pub(crate) use_ocdbt: bool,
    /// Whether arrays are zarr v3.
    #[prost(bool, tag = "2")]
    pub(crate) use_zarr3: bool,
    /// The zstd level; absent for uncompressed chunks.
    #[prost(int32, optional, tag = "3")]
    pub(crate) zstd_level: Option<i32>,
}

/// Wire form of [`SaveItem`].
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct WireSaveItem {
    /// The array id.
    #[prost(uint64, tag = "1")]
    pub(crate) id: u64,
    /// The zarr array path inside the item.
    #[prost(string, tag = "2")]
    pub(crate) param_name: String,
    /// Shape, dtype and chunk shape.
    #[prost(message, optional, tag = "3")]
    pub(crate) stored: Option<WireStoredArray>,
    /// Whether this host writes the zarr metadata.
    #[prost(bool, tag = "4")]
    pub(crate) create_metadata: bool,
    /// The shape each writer writes.
    #[prost(uint64, repeated, tag = "5")]
    pub(crate) write_shape: Vec<u64>,
    /// Replica-parallel slicing; absent when replica 0 writes whole shards.
    #[prost(message, optional, tag = "6")]
    pub(crate) replica_slicing: Option<WireReplicaSlicing>,
}

/// Wire form of [`ReplicaSlicing`].
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub(crate) struct WireReplicaSlicing {
    /// The shard axis that is split.
    #[prost(uint64, tag = "1")]
    pub(crate) axis: u64,
    /// The number of slices.
    #[prost(uint32, tag = "2")]
    pub(crate) replicas: u32,
}

/// Wire form of [`RestoreItem`].
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct WireRestoreItem {
    /// The id the restored array gets.
    #[prost(uint64, tag = "1")]
    pub(crate) id: u64,
    /// The zarr array path inside the item.
    #[prost(string, tag = "2")]
    pub(crate) param_name: String,
    /// Target shape, dtype and sharding.
    #[prost(message, optional, tag = "3")]
    pub(crate) spec: Option<WireArraySpec>,
    /// Whether a cast that changes values is allowed.
    #[prost(bool, tag = "4")]
    pub(crate) allow_lossy_cast: bool,
}

/// Creates an array whose values the worker generates.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PutGenerated {
    /// The new array's id.
    #[prost(uint64, tag = "1")]
    pub(crate) id: u64,
    /// Shape, dtype and sharding.
    #[prost(message, optional, tag = "2")]
    pub(crate) spec: Option<WireArraySpec>,
    /// The generator seed.
    #[prost(uint64, tag = "3")]
    pub(crate) seed: u64,
}

/// Writes the worker's shards into a checkpoint item.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SaveShards {
    /// The item directory as a path or URL that `open_store` accepts.
    #[prost(string, tag = "1")]
    pub(crate) location: String,
    /// Storage format.
    #[prost(message, optional, tag = "2")]
    pub(crate) format: Option<WireFormat>,
    /// The arrays.
    #[prost(message, repeated, tag = "3")]
    pub(crate) items: Vec<WireSaveItem>,
}

/// Reads the worker's boxes from a checkpoint item.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RestoreShards {
    /// The item directory as a path or URL that `open_store` accepts.
    #[prost(string, tag = "1")]
    pub(crate) location: String,
    /// Whether the item uses OCDBT; absent lets the reader detect it.
    #[prost(bool, optional, tag = "2")]
    pub(crate) use_ocdbt: Option<bool>,
    /// The arrays.
    #[prost(message, repeated, tag = "3")]
    pub(crate) items: Vec<WireRestoreItem>,
    /// Whether the item stores arrays as zarr v3.
    #[prost(bool, tag = "4")]
    pub(crate) use_zarr3: bool,
}

/// Compares an array with a generator's values.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub(crate) struct Verify {
    /// The array id.
    #[prost(uint64, tag = "1")]
    pub(crate) id: u64,
    /// The generator seed.
    #[prost(uint64, tag = "2")]
    pub(crate) seed: u64,
}

/// Drops arrays.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct DropArrays {
    /// The array ids.
    #[prost(uint64, repeated, tag = "1")]
    pub(crate) ids: Vec<u64>,
}

/// A source array and the id of its copy.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub(crate) struct ArrayPair {
    /// The source array.
    #[prost(uint64, tag = "1")]
    pub(crate) source: u64,
    /// The id the copy gets.
    #[prost(uint64, tag = "2")]
    pub(crate) copy: u64,
}

/// Copies arrays' replica-0 shards into host memory under new ids.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SnapshotArrays {
    /// The arrays and their copies' ids.
    #[prost(message, repeated, tag = "1")]
    pub(crate) arrays: Vec<ArrayPair>,
}

/// A request that carries no array bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct CallRequest {
    /// The controller session.
    #[prost(uint64, tag = "1")]
    pub(crate) session: u64,
    /// The request.
    #[prost(oneof = "WireCall", tags = "2, 3, 4, 5, 6, 7")]
    pub(crate) call: Option<WireCall>,
}

/// The requests of [`CallRequest`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum WireCall {
    /// See [`PutGenerated`].
    #[prost(message, tag = "2")]
    PutGenerated(PutGenerated),
    /// See [`SaveShards`].
    #[prost(message, tag = "3")]
    SaveShards(SaveShards),
    /// See [`RestoreShards`].
    #[prost(message, tag = "4")]
    RestoreShards(RestoreShards),
    /// See [`Verify`].
    #[prost(message, tag = "5")]
    Verify(Verify),
    /// See [`DropArrays`].
    #[prost(message, tag = "6")]
    DropArrays(DropArrays),
    /// See [`SnapshotArrays`].
    #[prost(message, tag = "7")]
    SnapshotArrays(SnapshotArrays),
}

/// Wire form of [`SaveReport`].
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub(crate) struct WireSaveReport {
    /// Array bytes written.
    #[prost(uint64, tag = "1")]
    pub(crate) bytes: u64,
    /// Chunks written.
    #[prost(uint64, tag = "2")]
    pub(crate) chunks: u64,
}

/// Wire form of [`VerifyReport`].
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub(crate) struct WireVerifyReport {
    /// Elements compared.
    #[prost(uint64, tag = "1")]
    pub(crate) elements: u64,
    /// Elements that differ.
    #[prost(uint64, tag = "2")]
    pub(crate) mismatches: u64,
}

/// The reply to a [`CallRequest`].
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct CallReply {
    /// The reply.
    #[prost(oneof = "WireReply", tags = "1, 2, 3, 4")]
    pub(crate) reply: Option<WireReply>,
}

/// The replies of [`CallReply`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum WireReply {
    /// The request succeeded and returns nothing.
    #[prost(message, tag = "1")]
    Done(Empty),
    /// A save's report.
    #[prost(message, tag = "2")]
    Saved(WireSaveReport),
    /// Array bytes a restore read.
    #[prost(uint64, tag = "3")]
    RestoredBytes(u64),
    /// A verification's report.
    #[prost(message, tag = "4")]
    Verified(WireVerifyReport),
}

/// A piece of one shard's bytes.
///
/// The pieces of a shard travel in order and back to back. The first has
/// `offset` 0 and carries the box and the shard's total length. Joined, the
/// data of all pieces is the shard's elements in C order.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ShardPiece {
    /// The array.
    #[prost(uint64, tag = "1")]
    pub(crate) array_id: u64,
    /// Start of the shard's box.
    #[prost(uint64, repeated, tag = "2")]
    pub(crate) start: Vec<u64>,
    /// Stop of the shard's box.
    #[prost(uint64, repeated, tag = "3")]
    pub(crate) stop: Vec<u64>,
    /// Length of the whole shard in bytes.
    #[prost(uint64, tag = "4")]
    pub(crate) total_bytes: u64,
    /// Position of this piece in the shard, in bytes.
    #[prost(uint64, tag = "5")]
    pub(crate) offset: u64,
    /// The piece's bytes.
    #[prost(bytes = "bytes", tag = "6")]
    pub(crate) data: Bytes,
}

/// The first message of a `PutShards` stream.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PutHeader {
    /// The controller session.
    #[prost(uint64, tag = "1")]
    pub(crate) session: u64,
    /// The new array's id.
    #[prost(uint64, tag = "2")]
    pub(crate) array_id: u64,
    /// Shape, dtype and sharding.
    #[prost(message, optional, tag = "3")]
    pub(crate) spec: Option<WireArraySpec>,
}

/// One message of a `PutShards` stream: a header, then shard pieces.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PutMessage {
    /// The header or a piece.
    #[prost(oneof = "PutKind", tags = "1, 2")]
    pub(crate) kind: Option<PutKind>,
}

/// The kinds of [`PutMessage`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum PutKind {
    /// The first message.
    #[prost(message, tag = "1")]
    Header(PutHeader),
    /// Every later message.
    #[prost(message, tag = "2")]
    Piece(ShardPiece),
}

/// Asks for the replica-0 shards of arrays.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct FetchRequest {
    /// The controller session.
    #[prost(uint64, tag = "1")]
    pub(crate) session: u64,
    /// The arrays.
    #[prost(uint64, repeated, tag = "2")]
    pub(crate) ids: Vec<u64>,
    /// Maximum bytes of data per piece.
    #[prost(uint64, tag = "3")]
    pub(crate) piece_bytes: u64,
}

/// Registers an SPMD process with the coordinator for as long as the stream stays open.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub(crate) struct JoinRequest {
    /// The process index.
    #[prost(uint64, tag = "1")]
    pub(crate) process_index: u64,
}

/// One process's arrival at a barrier.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct BarrierRequest {
    /// Name of the barrier, the same in every process.
    #[prost(string, tag = "1")]
    pub(crate) barrier_id: String,
    /// The arriving process.
    #[prost(uint64, tag = "2")]
    pub(crate) process_index: u64,
    /// How long the barrier waits for the other processes, in milliseconds.
    #[prost(uint64, tag = "3")]
    pub(crate) timeout_ms: u64,
    /// The process's failure, which fails the barrier for every process.
    #[prost(string, optional, tag = "4")]
    pub(crate) error: Option<String>,
    /// A value the process shares with the others.
    #[prost(string, tag = "5")]
    pub(crate) value: String,
}

/// The outcome of a barrier, the same for every process.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct BarrierReply {
    /// Whether every process arrived without an error.
    #[prost(bool, tag = "1")]
    pub(crate) ok: bool,
    /// Each process's value, by process index, when `ok`.
    #[prost(string, repeated, tag = "2")]
    pub(crate) values: Vec<String>,
    /// The process that failed or disconnected, if one did.
    #[prost(uint64, optional, tag = "3")]
    pub(crate) failed_process: Option<u64>,
    /// The reason the barrier failed.
    #[prost(string, tag = "4")]
    pub(crate) reason: String,
    /// Processes that had not arrived when the barrier timed out.
    #[prost(uint64, repeated, tag = "5")]
    pub(crate) missing: Vec<u64>,
}

// Conversions between protocol types and their wire forms. Decoding
// returns `INVALID_ARGUMENT` statuses, because a message that does not
// decode is the sender's fault.

pub(crate) fn spec_to_wire(spec: &ArraySpec) -> Result<WireArraySpec, String> {
    let sharding_json = serde_json::to_string(&spec.sharding)
        .map_err(|err| format!("could not encode the sharding as JSON: {err}"))?;
    Ok(WireArraySpec {
        shape: spec.shape.clone(),
        dtype: spec.dtype.name().to_owned(),
        sharding_json,
    })
}

pub(crate) fn spec_from_wire(spec: Option<WireArraySpec>) -> Result<ArraySpec, Status> {
    let spec = spec.ok_or_else(|| Status::invalid_argument("the array spec is missing"))?;
    let sharding: Sharding = serde_json::from_str(&spec.sharding_json)
        .map_err(|err| Status::invalid_argument(format!("invalid sharding JSON: {err}")))?;
    Ok(ArraySpec {
        shape: spec.shape,
        dtype: dtype_from_wire(&spec.dtype)?,
        sharding,
    })
}

fn dtype_from_wire(name: &str) -> Result<DType, Status> {
    DType::from_name(name).map_err(|err| Status::invalid_argument(err.to_string()))
}

pub(crate) fn format_to_wire(format: &ArrayFormat) -> Result<WireFormat, String> {
    let zstd_level = match format.compression {
        Compression::None => None,
        Compression::Zstd { level } => Some(level),
        other => return Err(format!("compression {other:?} has no wire form yet")),
    };
    Ok(WireFormat {
        use_ocdbt: format.use_ocdbt,
        use_zarr3: format.use_zarr3,
        zstd_level,
    })
}

pub(crate) fn format_from_wire(format: Option<WireFormat>) -> Result<ArrayFormat, Status> {
    let format = format.ok_or_else(|| Status::invalid_argument("the array format is missing"))?;
    let compression = match format.zstd_level {
        Some(level) => Compression::Zstd { level },
        None => Compression::None,
    };
    Ok(ArrayFormat::default()
        .with_ocdbt(format.use_ocdbt)
        .with_zarr3(format.use_zarr3)
        .with_compression(compression))
}

pub(crate) fn save_item_to_wire(item: &SaveItem) -> WireSaveItem {
    WireSaveItem {
        id: item.id.0,
        param_name: item.param_name.clone(),
        stored: Some(WireStoredArray {
            shape: item.stored.shape.clone(),
            dtype: item.stored.dtype.name().to_owned(),
            chunk_shape: item.stored.chunk_shape.clone(),
        }),
        create_metadata: item.create_metadata,
        write_shape: item.write_shape.clone(),
        replica_slicing: item.replica_slicing.map(|slicing| WireReplicaSlicing {
            axis: slicing.axis as u64,
            replicas: slicing.replicas,
        }),
    }
}

pub(crate) fn save_item_from_wire(item: WireSaveItem) -> Result<SaveItem, Status> {
    let stored = item
        .stored
        .ok_or_else(|| Status::invalid_argument("a save item has no stored array"))?;
    let replica_slicing = match item.replica_slicing {
        Some(slicing) => {
            let rank = stored.shape.len();
            let axis = usize::try_from(slicing.axis).ok().filter(|&axis| axis < rank);
            let Some(axis) = axis.filter(|_| slicing.replicas > 0) else {
                return Err(Status::invalid_argument(format!(
                    "invalid replica slicing of {}: axis {} of a rank-{rank} array into {} slices",
                    item.param_name, slicing.axis, slicing.replicas
                )));
            };
            Some(ReplicaSlicing {
                axis,
                replicas: slicing.replicas,
            })
        }
        None => None,
    };
    Ok(SaveItem {
        id: ArrayId(item.id),
        param_name: item.param_name,
        stored: StoredArray {
            shape: stored.shape,
            dtype: dtype_from_wire(&stored.dtype)?,
            chunk_shape: stored.chunk_shape,
        },
        write_shape: item.write_shape,
        replica_slicing,
        create_metadata: item.create_metadata,
    })
}

pub(crate) fn restore_item_to_wire(item: &RestoreItem) -> Result<WireRestoreItem, String> {
    Ok(WireRestoreItem {
        id: item.id.0,
        param_name: item.param_name.clone(),
        spec: Some(spec_to_wire(&item.spec)?),
        allow_lossy_cast: item.allow_lossy_cast,
    })
}

pub(crate) fn restore_item_from_wire(item: WireRestoreItem) -> Result<RestoreItem, Status> {
    Ok(RestoreItem {
        id: ArrayId(item.id),
        param_name: item.param_name,
        spec: spec_from_wire(item.spec)?,
        allow_lossy_cast: item.allow_lossy_cast,
    })
}

/// Returns the location a worker process opens to reach `store`: its local
/// path when it has one, else its URL.
///
/// Fails for an in-memory store, which exists only inside the controller's
/// process.
pub(crate) fn store_location(store: &Store) -> Result<String, String> {
    if let Some(path) = store.local_path() {
        return Ok(path.display().to_string());
    }
    let url = store.url();
    if url.starts_with("memory://") {
        return Err(format!(
            "the store {url} lives in the controller's memory, which a worker process cannot open; save to a local directory or a file:// URL"
        ));
    }
    Ok(url)
}

pub(crate) fn save_report_from_wire(report: WireSaveReport) -> SaveReport {
    SaveReport {
        bytes: report.bytes,
        chunks: report.chunks,
    }
}

pub(crate) fn verify_report_from_wire(report: WireVerifyReport) -> VerifyReport {
    VerifyReport {
        elements: report.elements,
        mismatches: report.mismatches,
    }
}

/// Returns the box of a piece that starts a shard.
pub(crate) fn piece_box(piece: &ShardPiece) -> Result<IndexBox, String> {
    IndexBox::new(piece.start.clone(), piece.stop.clone()).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use ckpt_device::{Mesh, PartitionSpec, Topology};
    use prost::Message;

    use super::*;

    fn spec() -> ArraySpec {
        let topology = Topology::uniform(2, 2).unwrap();
        let mesh = Mesh::new(vec![2, 2], vec!["x", "y"], topology.device_ids()).unwrap();
        ArraySpec {
            shape: vec![9, 5],
            dtype: DType::BFloat16,
            sharding: Sharding::named(mesh, PartitionSpec::new([Some("x"), None])).unwrap(),
        }
    }

    #[test]
    fn spec_round_trip() {
        let wire = spec_to_wire(&spec()).unwrap();
        let bytes = wire.encode_to_vec();
        let decoded = WireArraySpec::decode(bytes.as_slice()).unwrap();
        assert_eq!(spec_from_wire(Some(decoded)).unwrap(), spec());
    }

    #[test]
    fn spec_missing_is_rejected() {
        let status = spec_from_wire(None).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn unknown_dtype_is_rejected() {
        let mut wire = spec_to_wire(&spec()).unwrap();
        wire.dtype = "float7".into();
        let status = spec_from_wire(Some(wire)).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("float7"), "{}", status.message());
    }

    #[test]
    fn format_round_trip() {
        for format in [
            ArrayFormat::default(),
            ArrayFormat::default()
                .with_ocdbt(false)
                .with_compression(Compression::None),
        ] {
            let wire = format_to_wire(&format).unwrap();
            assert_eq!(format_from_wire(Some(wire)).unwrap(), format);
        }
    }

    #[test]
    fn save_item_round_trip() {
        let item = SaveItem {
            id: ArrayId(7),
            param_name: "params.w".into(),
            stored: StoredArray {
                shape: vec![9, 5],
                dtype: DType::Int32,
                chunk_shape: vec![5, 5],
            },
            write_shape: vec![5, 5],
            replica_slicing: Some(ReplicaSlicing {
                axis: 1,
                replicas: 2,
            }),
            create_metadata: true,
        };
        let decoded = save_item_from_wire(save_item_to_wire(&item)).unwrap();
        assert_eq!(decoded.id, item.id);
        assert_eq!(decoded.param_name, item.param_name);
        assert_eq!(decoded.stored, item.stored);
        assert_eq!(decoded.write_shape, item.write_shape);
        assert_eq!(decoded.replica_slicing, item.replica_slicing);
        assert!(decoded.create_metadata);
    }

    #[test]
    fn replica_slicing_axis_is_checked() {
        let mut wire = save_item_to_wire(&SaveItem {
            id: ArrayId(1),
            param_name: "w".into(),
            stored: StoredArray {
                shape: vec![4],
                dtype: DType::Int8,
                chunk_shape: vec![4],
            },
            write_shape: vec![4],
            replica_slicing: None,
            create_metadata: false,
        });
        wire.replica_slicing = Some(WireReplicaSlicing {
            axis: 3,
            replicas: 2,
        });
        let status = save_item_from_wire(wire).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn call_request_round_trip() {
        let request = CallRequest {
            session: 42,
            call: Some(WireCall::DropArrays(DropArrays { ids: vec![1, 2, 3] })),
        };
        let decoded = CallRequest::decode(request.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, request);
    }

    #[test]
    fn memory_store_has_no_location() {
        let store = ckpt_storage::open_store("memory://bucket/ckpt").unwrap();
        let message = store_location(&store).unwrap_err();
        assert!(message.contains("memory://bucket/ckpt"), "{message}");
        assert!(message.contains("file://"), "{message}");
    }

    #[test]
    fn local_store_location_is_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = ckpt_storage::open_store(dir.path().to_str().unwrap()).unwrap();
        let location = store_location(&store.child("a b").unwrap()).unwrap();
        let expected = std::fs::canonicalize(dir.path()).unwrap().join("a b");
        assert_eq!(location, expected.display().to_string());
    }
}
