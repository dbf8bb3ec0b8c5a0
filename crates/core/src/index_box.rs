use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{num_elements, CoreError};

/// A hyper-rectangle of array indices, `[start, stop)` in every dimension.
///
/// Shards, chunks and restore targets are all boxes in the coordinates of
/// the global array. A box with `start == stop` in some dimension is empty.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IndexBox {
    start: Vec<u64>,
    stop: Vec<u64>,
}

impl IndexBox {
    /// Creates the box `[start, stop)`, rejecting a start after its stop.
    pub fn new(start: Vec<u64>, stop: Vec<u64>) -> Result<IndexBox, CoreError> {
        if start.len() != stop.len() {
            return Err(CoreError::RankMismatch {
                expected: start.len(),
                found: stop.len(),
            });
        }
        if start.iter().zip(&stop).any(|(a, b)| a > b) {
            return Err(CoreError::InvalidBox { start, stop });
        }
        Ok(IndexBox { start, stop })
    }

    /// Creates the box `[origin, origin + shape)`, rejecting a stop that overflows.
    pub fn from_origin_shape(origin: &[u64], shape: &[u64]) -> Result<IndexBox, CoreError> {
        if origin.len() != shape.len() {
            return Err(CoreError::RankMismatch {
                expected: origin.len(),
                found: shape.len(),
            });
        }
        let stop = origin
            .iter()
            .zip(shape)
            .map(|(o, s)| o.checked_add(*s))
            .collect::<Option<Vec<u64>>>()
            .ok_or_else(|| CoreError::ShapeOverflow {
                shape: shape.to_vec(),
            })?;
        Ok(IndexBox {
            start: origin.to_vec(),
            stop,
        })
    }

    /// Creates the box covering a whole array of `shape`.
    pub fn full(shape: &[u64]) -> IndexBox {
        IndexBox {
            start: vec![0; shape.len()],
            stop: shape.to_vec(),
        }
    }

    /// Inclusive lower corner.
    pub fn start(&self) -> &[u64] {
        &self.start
    }

    /// Exclusive upper corner.
    pub fn stop(&self) -> &[u64] {
        &self.stop
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.start.len()
    }

    /// Extent in every dimension.
    pub fn shape(&self) -> Vec<u64> {
        self.start
            .iter()
            .zip(&self.stop)
            .map(|(a, b)| b - a)
            .collect()
    }

    /// Number of elements, checked for overflow.
    pub fn num_elements(&self) -> Result<u64, CoreError> {
        num_elements(&self.shape())
    }

    /// Whether the box holds no element. A 0-d box holds one.
    pub fn is_empty(&self) -> bool {
        self.start.iter().zip(&self.stop).any(|(a, b)| a == b)
    }

    /// Returns the overlap of two boxes of the same rank, or `None` if it is empty.
    pub fn intersect(&self, other: &IndexBox) -> Option<IndexBox> {
        if self.rank() != other.rank() {
            return None;
        }
        let start: Vec<u64> = self
            .start
            .iter()
            .zip(&other.start)
            .map(|(a, b)| *a.max(b))
            .collect();
        let stop: Vec<u64> = self
            .stop
            .iter()
            .zip(&other.stop)
            .map(|(a, b)| *a.min(b))
            .collect();
        if start.iter().zip(&stop).any(|(a, b)| a >= b) && self.rank() > 0 {
            return None;
        }
        Some(IndexBox { start, stop })
    }

    /// Whether `other` lies entirely inside this box.
    pub fn contains(&self, other: &IndexBox) -> bool {
        self.rank() == other.rank()
            && self
                .start
                .iter()
                .zip(&other.start)
                .all(|(outer, inner)| outer <= inner)
            && self
                .stop
                .iter()
                .zip(&other.stop)
                .all(|(outer, inner)| inner <= outer)
    }
}

impl fmt::Display for IndexBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (dim, (a, b)) in self.start.iter().zip(&self.stop).enumerate() {
            if dim > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{a}:{b}")?;
        }
        f.write_str("]")
    }
}

impl fmt::Debug for IndexBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IndexBox{self}")
    }
}

/// A regular grid of chunks over an array, as zarr lays them out.
///
/// Chunks at the upper edge may extend past the array; [`ChunkGrid::chunk_box`]
/// returns the full chunk and callers clip it with the array box where needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkGrid {
    shape: Vec<u64>,
    chunk_shape: Vec<u64>,
}

impl ChunkGrid {
    /// Creates the grid of `chunk_shape` chunks over an array of `shape`.
    pub fn new(shape: &[u64], chunk_shape: &[u64]) -> Result<ChunkGrid, CoreError> {
        if shape.len() != chunk_shape.len() || chunk_shape.contains(&0) {
            return Err(CoreError::InvalidChunkShape {
                shape: shape.to_vec(),
                chunk_shape: chunk_shape.to_vec(),
            });
        }
        Ok(ChunkGrid {
            shape: shape.to_vec(),
            chunk_shape: chunk_shape.to_vec(),
        })
    }

    /// The array shape.
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// The chunk shape.
    pub fn chunk_shape(&self) -> &[u64] {
        &self.chunk_shape
    }

    /// Number of chunks along each dimension.
    pub fn grid_shape(&self) -> Vec<u64> {
        self.shape
            .iter()
            .zip(&self.chunk_shape)
            .map(|(s, c)| s.div_ceil(*c))
            .collect()
    }

    /// The full (unclipped) box of the chunk at `chunk_index`.
    pub fn chunk_box(&self, chunk_index: &[u64]) -> Result<IndexBox, CoreError> {
        let origin = chunk_index
            .iter()
            .zip(&self.chunk_shape)
            .map(|(i, c)| i.checked_mul(*c))
            .collect::<Option<Vec<u64>>>()
            .ok_or_else(|| CoreError::ShapeOverflow {
                shape: chunk_index.to_vec(),
            })?;
        IndexBox::from_origin_shape(&origin, &self.chunk_shape)
    }

    /// Returns the indices of every chunk that overlaps `region`, in C order.
    pub fn chunks_overlapping(&self, region: &IndexBox) -> Vec<Vec<u64>> {
        if region.rank() != self.shape.len() {
            return Vec::new();
        }
        let Some(region) = region.intersect(&IndexBox::full(&self.shape)) else {
            return Vec::new();
        };
        let first: Vec<u64> = region
            .start()
            .iter()
            .zip(&self.chunk_shape)
            .map(|(s, c)| s / c)
            .collect();
        let last: Vec<u64> = region
            .stop()
            .iter()
            .zip(&self.chunk_shape)
            .map(|(s, c)| (s - 1) / c + 1)
            .collect();
        let Ok(span) = IndexBox::new(first, last) else {
            return Vec::new();
        };
        BoxIndices::new(&span).collect()
    }
}

/// Iterator over every index of a box in C order.
#[derive(Clone, Debug)]
pub struct BoxIndices {
    start: Vec<u64>,
    stop: Vec<u64>,
    next: Option<Vec<u64>>,
}

impl BoxIndices {
    /// Creates an iterator over the indices of `region`.
    pub fn new(region: &IndexBox) -> BoxIndices {
        let next = if region.is_empty() {
            None
        } else {
            Some(region.start().to_vec())
        };
        BoxIndices {
            start: region.start().to_vec(),
            stop: region.stop().to_vec(),
            next,
        }
    }
}

impl Iterator for BoxIndices {
    type Item = Vec<u64>;

    fn next(&mut self) -> Option<Vec<u64>> {
        let current = self.next.take()?;
        let mut following = current.clone();
        for dim in (0..following.len()).rev() {
            following[dim] += 1;
            if following[dim] < self.stop[dim] {
                self.next = Some(following);
                return Some(current);
            }
            following[dim] = self.start[dim];
        }
        Some(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ibox(start: &[u64], stop: &[u64]) -> IndexBox {
        IndexBox::new(start.to_vec(), stop.to_vec()).unwrap()
    }

    #[test]
    fn start_after_stop_is_rejected() {
        let err = IndexBox::new(vec![3], vec![2]).unwrap_err();
        assert!(matches!(err, CoreError::InvalidBox { .. }));
    }

    #[test]
    fn intersection_of_overlapping_boxes() {
        let a = ibox(&[0, 0], &[4, 4]);
        let b = ibox(&[2, 3], &[6, 8]);
        assert_eq!(a.intersect(&b), Some(ibox(&[2, 3], &[4, 4])));
    }

    #[test]
    fn intersection_of_touching_boxes_is_none() {
        let a = ibox(&[0], &[4]);
        let b = ibox(&[4], &[8]);
        assert_eq!(a.intersect(&b), None);
    }

    #[test]
    fn scalar_boxes_intersect() {
        let a = IndexBox::full(&[]);
        assert_eq!(a.intersect(&a), Some(a.clone()));
        assert_eq!(a.num_elements(), Ok(1));
    }

    #[test]
    fn chunks_overlapping_uneven_edge() {
        let grid = ChunkGrid::new(&[10, 4], &[4, 4]).unwrap();
        assert_eq!(grid.grid_shape(), vec![3, 1]);
        let chunks = grid.chunks_overlapping(&ibox(&[3, 0], &[9, 4]));
        assert_eq!(chunks, vec![vec![0, 0], vec![1, 0], vec![2, 0]]);
    }

    #[test]
    fn zero_chunk_extent_is_rejected() {
        let err = ChunkGrid::new(&[4], &[0]).unwrap_err();
        assert!(matches!(err, CoreError::InvalidChunkShape { .. }));
    }

    #[test]
    fn box_indices_c_order() {
        let indices: Vec<Vec<u64>> = BoxIndices::new(&ibox(&[1, 0], &[3, 2])).collect();
        assert_eq!(indices, vec![vec![1, 0], vec![1, 1], vec![2, 0], vec![2, 1]]);
    }

    #[test]
    fn display_is_slice_notation() {
        assert_eq!(ibox(&[0, 2], &[4, 6]).to_string(), "[0:4, 2:6]");
    }
}
