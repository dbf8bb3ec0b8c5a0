use ckpt_core::{c_strides, BoxIndices, DType, IndexBox};
use half::{bf16, f16};
use serde::{Deserialize, Serialize};

/// A deterministic source of non-zero array values, computed where the data lives.
///
/// The value of an element depends only on the seed and the element's
/// position in the global array, so the host that owns a shard can create
/// or check it without any array bytes crossing to the controller. Every
/// value is non-zero and finite, so a chunk of zeros or a misplaced chunk
/// shows up as a mismatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generator {
    /// Seed that distinguishes arrays.
    pub seed: u64,
}

impl Generator {
    /// Creates a generator with `seed`.
    pub fn new(seed: u64) -> Generator {
        Generator { seed }
    }

    /// Fills `dst`, laid out in C order for `region` of a `global_shape` array.
    ///
    /// `dst` must hold exactly the region's elements; callers size it with
    /// `ckpt_core::num_bytes_usize`.
    pub fn fill(&self, dtype: DType, global_shape: &[u64], region: &IndexBox, dst: &mut [u8]) {
        let item_size = dtype.item_size();
        let strides = c_strides(global_shape);
        if region.rank() == 0 {
            self.write_element(dtype, 0, &mut dst[..item_size]);
            return;
        }
        // Walk rows of the region: each row is contiguous in the global array,
        // so linear indices run on from the row's first element.
        let last = region.rank() - 1;
        let row_len = (region.stop()[last] - region.start()[last]) as usize;
        if row_len == 0 {
            return;
        }
        let mut row_region_stop = region.stop().to_vec();
        row_region_stop[last] = region.start()[last] + 1;
        let Ok(rows) = IndexBox::new(region.start().to_vec(), row_region_stop) else {
            return;
        };
        for (row, index) in BoxIndices::new(&rows).enumerate() {
            let first: u64 = index.iter().zip(&strides).map(|(i, s)| i * s).sum();
            let row_bytes = &mut dst[row * row_len * item_size..(row + 1) * row_len * item_size];
            for (k, element) in row_bytes.chunks_exact_mut(item_size).enumerate() {
                self.write_element(dtype, first + k as u64, element);
            }
        }
    }

    /// Returns the bytes of a whole `global_shape` array.
    pub fn global_bytes(&self, dtype: DType, global_shape: &[u64]) -> Vec<u8> {
        let count: u64 = global_shape.iter().product();
        let mut bytes = vec![0u8; count as usize * dtype.item_size()];
        self.fill(dtype, global_shape, &IndexBox::full(global_shape), &mut bytes);
        bytes
    }

    fn write_element(&self, dtype: DType, linear_index: u64, out: &mut [u8]) {
        let bits = splitmix64(self.seed ^ linear_index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // A value in 1..=255 and a float in [0.5, 1.5): both non-zero.
        let small = (bits % 255 + 1) as u8;
        let unit = 0.5 + (bits >> 11) as f64 / (1u64 << 53) as f64;
        match dtype {
            DType::Bool => out[0] = 1,
            DType::Int4 => out[0] = small % 7 + 1,
            DType::Int8 | DType::UInt8 => out[0] = small % 127 + 1,
            DType::Int16 | DType::UInt16 => {
                out.copy_from_slice(&((bits % 30000 + 1) as u16).to_le_bytes())
            }
            DType::Int32 | DType::UInt32 => {
                out.copy_from_slice(&((bits % 2_000_000_000 + 1) as u32).to_le_bytes())
            }
            DType::Int64 | DType::UInt64 => {
                out.copy_from_slice(&((bits >> 2) | 1).to_le_bytes())
            }
            DType::Float16 => out.copy_from_slice(&f16::from_f64(unit).to_le_bytes()),
            DType::BFloat16 => out.copy_from_slice(&bf16::from_f64(unit).to_le_bytes()),
            DType::Float32 => out.copy_from_slice(&(unit as f32).to_le_bytes()),
            DType::Float64 => out.copy_from_slice(&unit.to_le_bytes()),
            // Bit patterns 0x08..=0x6f are finite, non-zero values in both float8 formats.
            DType::Float8E4M3Fn | DType::Float8E5M2 => out[0] = 0x08 + small % 0x68,
            DType::Complex64 => {
                out[..4].copy_from_slice(&(unit as f32).to_le_bytes());
                out[4..].copy_from_slice(&((2.0 - unit) as f32).to_le_bytes());
            }
            DType::Complex128 => {
                out[..8].copy_from_slice(&unit.to_le_bytes());
                out[8..].copy_from_slice(&(2.0 - unit).to_le_bytes());
            }
            _ => out.fill(small),
        }
    }
}

/// The splitmix64 finalizer: a fast, well-mixed 64-bit hash.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use ckpt_core::copy_region;

    use super::*;

    #[test]
    fn region_matches_slice_of_global() {
        let shape = [6, 5];
        let generator = Generator::new(7);
        for dtype in DType::ALL {
            let global = generator.global_bytes(dtype, &shape);
            let region = IndexBox::new(vec![1, 2], vec![4, 5]).unwrap();
            let mut expected = vec![0u8; 9 * dtype.item_size()];
            copy_region(
                &global,
                &IndexBox::full(&shape),
                &mut expected,
                &region,
                &region,
                dtype.item_size(),
            )
            .unwrap();
            let mut generated = vec![0u8; 9 * dtype.item_size()];
            generator.fill(dtype, &shape, &region, &mut generated);
            assert_eq!(generated, expected, "{dtype}");
        }
    }

    #[test]
    fn values_are_non_zero() {
        let generator = Generator::new(3);
        for dtype in DType::ALL {
            let bytes = generator.global_bytes(dtype, &[64]);
            for element in bytes.chunks_exact(dtype.item_size()) {
                assert!(element.iter().any(|b| *b != 0), "{dtype} has a zero element");
            }
        }
    }

    #[test]
    fn seeds_differ() {
        let a = Generator::new(1).global_bytes(DType::Float32, &[16]);
        let b = Generator::new(2).global_bytes(DType::Float32, &[16]);
        assert_ne!(a, b);
    }
}
