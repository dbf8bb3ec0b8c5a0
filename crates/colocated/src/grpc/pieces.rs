//! Splitting shard bytes into bounded pieces and joining them again.

use bytes::{Bytes, BytesMut};
use ckpt_core::{num_bytes, DType, IndexBox};

use crate::grpc::wire::{piece_box, ShardPiece};

/// Smallest piece a sender may ask for, in bytes.
pub(crate) const MIN_PIECE_BYTES: usize = 4 << 10;
/// Largest piece, in bytes: well under tonic's default limit of 4 MiB per
/// decoded message, which leaves room for the piece's other fields.
pub(crate) const MAX_PIECE_BYTES: usize = 2 << 20;
/// Most bytes a receiver reserves ahead for one shard; longer shards grow
/// as their pieces arrive, so a wrong `total_bytes` cannot make the
/// receiver allocate what was never sent.
const MAX_RESERVE_BYTES: usize = 64 << 20;

/// Clamps a requested piece size into the accepted range.
pub(crate) fn clamp_piece_bytes(requested: u64) -> usize {
    let requested = usize::try_from(requested).unwrap_or(MAX_PIECE_BYTES);
    requested.clamp(MIN_PIECE_BYTES, MAX_PIECE_BYTES)
}

/// Splits one shard into pieces of at most `piece_bytes` bytes each, with
/// no copy. An empty shard becomes one piece without data.
pub(crate) fn split_shard(
    array_id: u64,
    index: &IndexBox,
    bytes: &Bytes,
    piece_bytes: usize,
) -> Vec<ShardPiece> {
    let piece_bytes = piece_bytes.max(1);
    let total = bytes.len();
    let mut pieces = Vec::with_capacity(total.div_ceil(piece_bytes).max(1));
    let mut offset = 0;
    loop {
        let end = (offset + piece_bytes).min(total);
        let first = offset == 0;
        pieces.push(ShardPiece {
            array_id,
            start: if first { index.start().to_vec() } else { Vec::new() },
            stop: if first { index.stop().to_vec() } else { Vec::new() },
            total_bytes: total as u64,
            offset: offset as u64,
            data: bytes.slice(offset..end),
        });
        offset = end;
        if offset >= total {
            return pieces;
        }
    }
}

/// One shard put together from its pieces.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct JoinedShard {
    pub(crate) array_id: u64,
    pub(crate) index: IndexBox,
    pub(crate) bytes: Bytes,
}

/// Joins the pieces of a stream of shards, checking that each shard's
/// pieces arrive in order, without gaps, and add up to its length.
#[derive(Debug, Default)]
pub(crate) struct ShardAssembler {
    /// When set, each shard's length must match its box in this dtype.
    dtype: Option<DType>,
    current: Option<(u64, IndexBox, u64, BytesMut)>,
    done: Vec<JoinedShard>,
}

impl ShardAssembler {
    /// An assembler that also checks each shard's length against its box.
    pub(crate) fn with_dtype(dtype: DType) -> ShardAssembler {
        ShardAssembler {
            dtype: Some(dtype),
            ..ShardAssembler::default()
        }
    }

    /// Adds the next piece of the stream.
    pub(crate) fn push(&mut self, piece: ShardPiece) -> Result<(), String> {
        if piece.offset == 0 && self.current.is_none() {
            self.start_shard(&piece)?;
        }
        let Some((array_id, index, total, bytes)) = &mut self.current else {
            return Err(format!(
                "a piece of array {} starts at byte {} but no shard is open; pieces must start at offset 0",
                piece.array_id, piece.offset
            ));
        };
        if piece.array_id != *array_id || piece.offset != bytes.len() as u64 {
            return Err(format!(
                "expected the piece of array {array_id} at byte {} of box {index}, but got array {} at byte {}",
                bytes.len(),
                piece.array_id,
                piece.offset
            ));
        }
        let end = piece.offset.checked_add(piece.data.len() as u64);
        if end.is_none_or(|end| end > *total) {
            return Err(format!(
                "a piece of array {array_id} at byte {} with {} bytes runs past the shard's {total} bytes",
                piece.offset,
                piece.data.len()
            ));
        }
        bytes.extend_from_slice(&piece.data);
        if bytes.len() as u64 == *total {
            self.close_shard();
        }
        Ok(())
    }

    fn start_shard(&mut self, piece: &ShardPiece) -> Result<(), String> {
        let index = piece_box(piece)?;
        if let Some(dtype) = self.dtype {
            let expected = num_bytes(&index.shape(), dtype).map_err(|err| err.to_string())?;
            if expected != piece.total_bytes {
                return Err(format!(
                    "box {index} of {dtype} holds {expected} bytes but the shard declares {}",
                    piece.total_bytes
                ));
            }
        }
        let reserve = usize::try_from(piece.total_bytes)
            .unwrap_or(usize::MAX)
            .min(MAX_RESERVE_BYTES);
        let bytes = BytesMut::with_capacity(reserve);
        self.current = Some((piece.array_id, index, piece.total_bytes, bytes));
        Ok(())
    }

    fn close_shard(&mut self) {
        if let Some((array_id, index, _, bytes)) = self.current.take() {
            self.done.push(JoinedShard {
                array_id,
                index,
                bytes: bytes.freeze(),
            });
        }
    }

    /// Returns the shards, failing when the stream ended inside one.
    pub(crate) fn finish(mut self) -> Result<Vec<JoinedShard>, String> {
        if let Some((array_id, index, total, bytes)) = self.current.take() {
            return Err(format!(
                "the stream ended after {} of the {total} bytes of array {array_id}'s box {index}",
                bytes.len()
            ));
        }
        Ok(self.done)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn shard(len: usize) -> (IndexBox, Bytes) {
        let index = IndexBox::new(vec![2], vec![2 + len as u64]).unwrap();
        let bytes: Bytes = (0..len).map(|i| i as u8).collect::<Vec<u8>>().into();
        (index, bytes)
    }

    proptest! {
        #[test]
        fn split_join_round_trip(lens in proptest::collection::vec(0usize..300, 1..5), piece in 1usize..64) {
            let shards: Vec<(IndexBox, Bytes)> = lens.iter().map(|&len| shard(len)).collect();
            let mut assembler = ShardAssembler::with_dtype(DType::UInt8);
            for (id, (index, bytes)) in shards.iter().enumerate() {
                for part in split_shard(id as u64, index, bytes, piece) {
                    prop_assert!(part.data.len() <= piece);
                    prop_assert!(part.offset + part.data.len() as u64 <= part.total_bytes);
                    assembler.push(part).unwrap();
                }
            }
            let joined = assembler.finish().unwrap();
            prop_assert_eq!(joined.len(), shards.len());
            for (id, (shard, (index, bytes))) in joined.iter().zip(&shards).enumerate() {
                prop_assert_eq!(shard.array_id, id as u64);
                prop_assert_eq!(&shard.index, index);
                prop_assert_eq!(&shard.bytes, bytes);
            }
        }
    }

    #[test]
    fn pieces_are_bounded() {
        let (index, bytes) = shard(100);
        let pieces = split_shard(1, &index, &bytes, 32);
        let lens: Vec<usize> = pieces.iter().map(|p| p.data.len()).collect();
        assert_eq!(lens, [32, 32, 32, 4]);
        assert_eq!(pieces[0].start, [2]);
        assert!(pieces[1].start.is_empty());
    }

    #[test]
    fn empty_shard_is_one_piece() {
        let (index, bytes) = shard(0);
        let pieces = split_shard(1, &index, &bytes, 32);
        assert_eq!(pieces.len(), 1);
        let mut assembler = ShardAssembler::default();
        assembler.push(pieces[0].clone()).unwrap();
        assert_eq!(assembler.finish().unwrap().len(), 1);
    }

    #[test]
    fn gap_is_rejected() {
        let (index, bytes) = shard(100);
        let pieces = split_shard(1, &index, &bytes, 32);
        let mut assembler = ShardAssembler::default();
        assembler.push(pieces[0].clone()).unwrap();
        let err = assembler.push(pieces[2].clone()).unwrap_err();
        assert!(err.contains("at byte 32"), "{err}");
    }

    #[test]
    fn overrun_is_rejected() {
        let (index, bytes) = shard(10);
        let mut piece = split_shard(1, &index, &bytes, 32).remove(0);
        piece.total_bytes = 5;
        let err = ShardAssembler::default().push(piece).unwrap_err();
        assert!(err.contains("runs past"), "{err}");
    }

    #[test]
    fn truncated_stream_is_rejected() {
        let (index, bytes) = shard(100);
        let pieces = split_shard(1, &index, &bytes, 32);
        let mut assembler = ShardAssembler::default();
        assembler.push(pieces[0].clone()).unwrap();
        let err = assembler.finish().unwrap_err();
        assert!(err.contains("after 32 of the 100 bytes"), "{err}");
    }

    #[test]
    fn wrong_length_for_dtype_is_rejected() {
        let (index, bytes) = shard(10);
        let piece = split_shard(1, &index, &bytes, 32).remove(0);
        let err = ShardAssembler::with_dtype(DType::Float32).push(piece).unwrap_err();
        assert!(err.contains("holds 40 bytes"), "{err}");
    }

    #[test]
    fn piece_without_open_shard_is_rejected() {
        let (index, bytes) = shard(100);
        let piece = split_shard(1, &index, &bytes, 32).remove(1);
        let err = ShardAssembler::default().push(piece).unwrap_err();
        assert!(err.contains("no shard is open"), "{err}");
    }
}
