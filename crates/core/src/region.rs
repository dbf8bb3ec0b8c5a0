use crate::{c_strides, cast_elements, CoreError, DType, IndexBox};

/// Copies the elements of `region` from one C-order buffer into another.
///
/// `src` holds the elements of `src_box` and `dst` those of `dst_box`, both
/// in C order with `item_size` bytes per element; `region` is given in the
/// same global coordinates and must lie inside both boxes. This is the
/// kernel of resharding: it finds the longest run of elements that is
/// contiguous in both buffers and copies each run with one `copy_from_slice`.
pub fn copy_region(
    src: &[u8],
    src_box: &IndexBox,
    dst: &mut [u8],
    dst_box: &IndexBox,
    region: &IndexBox,
    item_size: usize,
) -> Result<(), CoreError> {
    check_buffer(src.len(), src_box, item_size)?;
    check_buffer(dst.len(), dst_box, item_size)?;
    for buffer_box in [src_box, dst_box] {
        if !buffer_box.contains(region) {
            return Err(CoreError::RegionOutOfBounds {
                region: region.to_string(),
                buffer_box: buffer_box.to_string(),
            });
        }
    }
    let run_bytes_of = |elements: u64| elements as usize * item_size;
    for_each_run(src_box, dst_box, region, |src_offset, dst_offset, run_elements| {
        let (s, d, n) = (run_bytes_of(src_offset), run_bytes_of(dst_offset), run_bytes_of(run_elements));
        dst[d..d + n].copy_from_slice(&src[s..s + n]);
    });
    Ok(())
}

/// Copies the elements of `region` from one C-order buffer into another of
/// another dtype, converting each as [`cast_elements`] does.
///
/// The buffers and `region` are as in [`copy_region`], with `src` holding
/// `from` elements and `dst` holding `to` elements. Lossy casts convert
/// too; check [`crate::CastKind::of`] first where they must be rejected.
pub fn copy_region_cast(
    src: &[u8],
    src_box: &IndexBox,
    from: DType,
    dst: &mut [u8],
    dst_box: &IndexBox,
    to: DType,
    region: &IndexBox,
) -> Result<(), CoreError> {
    check_buffer(src.len(), src_box, from.item_size())?;
    check_buffer(dst.len(), dst_box, to.item_size())?;
    for buffer_box in [src_box, dst_box] {
        if !buffer_box.contains(region) {
            return Err(CoreError::RegionOutOfBounds {
                region: region.to_string(),
                buffer_box: buffer_box.to_string(),
            });
        }
    }
    let (src_size, dst_size) = (from.item_size(), to.item_size());
    let mut result = Ok(());
    for_each_run(src_box, dst_box, region, |src_offset, dst_offset, run_elements| {
        if result.is_err() {
            return;
        }
        let (s, n) = (src_offset as usize * src_size, run_elements as usize * src_size);
        let (d, m) = (dst_offset as usize * dst_size, run_elements as usize * dst_size);
        result = cast_elements(from, &src[s..s + n], to, &mut dst[d..d + m]);
    });
    result
}

/// Calls `copy(src_offset, dst_offset, run_elements)` for each run of
/// elements of `region` that is contiguous in both buffers, with offsets in
/// elements. The buffers must contain `region`; callers check that first.
fn for_each_run(
    src_box: &IndexBox,
    dst_box: &IndexBox,
    region: &IndexBox,
    mut copy: impl FnMut(u64, u64, u64),
) {
    if region.is_empty() {
        return;
    }

    let rank = region.rank();
    let region_shape = region.shape();
    let src_shape = src_box.shape();
    let dst_shape = dst_box.shape();

    // Fold trailing dimensions into one run while the region spans them
    // whole in both buffers; `outer` dimensions remain to iterate over.
    let mut run_elements: u64 = 1;
    let mut outer = rank;
    while outer > 0 {
        let dim = outer - 1;
        run_elements *= region_shape[dim];
        outer -= 1;
        if region_shape[dim] != src_shape[dim] || region_shape[dim] != dst_shape[dim] {
            break;
        }
    }

    let src_strides = c_strides(&src_shape);
    let dst_strides = c_strides(&dst_shape);
    let offset_in = |buffer_box: &IndexBox, strides: &[u64]| -> u64 {
        (0..rank)
            .map(|dim| (region.start()[dim] - buffer_box.start()[dim]) * strides[dim])
            .sum()
    };
    let mut src_offset = offset_in(src_box, &src_strides);
    let mut dst_offset = offset_in(dst_box, &dst_strides);

    // Odometer over the outer dimensions, moving both offsets by their strides.
    let mut counter = vec![0u64; outer];
    loop {
        copy(src_offset, dst_offset, run_elements);

        let mut dim = outer;
        loop {
            if dim == 0 {
                return;
            }
            dim -= 1;
            counter[dim] += 1;
            src_offset += src_strides[dim];
            dst_offset += dst_strides[dim];
            if counter[dim] < region_shape[dim] {
                break;
            }
            src_offset -= src_strides[dim] * region_shape[dim];
            dst_offset -= dst_strides[dim] * region_shape[dim];
            counter[dim] = 0;
        }
    }
}

fn check_buffer(len: usize, buffer_box: &IndexBox, item_size: usize) -> Result<(), CoreError> {
    let expected = buffer_box
        .num_elements()?
        .checked_mul(item_size as u64)
        .ok_or_else(|| CoreError::ShapeOverflow {
            shape: buffer_box.shape(),
        })?;
    if expected != len as u64 {
        return Err(CoreError::BufferSize {
            expected,
            found: len as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::BoxIndices;

    /// Copies element by element: the reference the fast kernel must match.
    fn copy_reference(
        src: &[u8],
        src_box: &IndexBox,
        dst: &mut [u8],
        dst_box: &IndexBox,
        region: &IndexBox,
        item_size: usize,
    ) {
        let src_strides = c_strides(&src_box.shape());
        let dst_strides = c_strides(&dst_box.shape());
        for index in BoxIndices::new(region) {
            let at = |b: &IndexBox, strides: &[u64]| -> usize {
                index
                    .iter()
                    .enumerate()
                    .map(|(d, i)| ((i - b.start()[d]) * strides[d]) as usize)
                    .sum::<usize>()
                    * item_size
            };
            let s = at(src_box, &src_strides);
            let d = at(dst_box, &dst_strides);
            dst[d..d + item_size].copy_from_slice(&src[s..s + item_size]);
        }
    }

    fn ibox(start: &[u64], stop: &[u64]) -> IndexBox {
        IndexBox::new(start.to_vec(), stop.to_vec()).unwrap()
    }

    #[test]
    fn cast_copy_converts_region() {
        // A 2x3 int16 array; its right column lands in an f32 buffer.
        let whole = IndexBox::full(&[2, 3]);
        let column = IndexBox::new(vec![0, 2], vec![2, 3]).unwrap();
        let src: Vec<u8> = [1i16, 2, 3, 4, 5, -6].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut dst = vec![0u8; 8];
        copy_region_cast(&src, &whole, DType::Int16, &mut dst, &column, DType::Float32, &column).unwrap();
        let values: Vec<f32> = dst.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(values, [3.0, -6.0]);
    }

    #[test]
    fn copies_column_block() {
        // src: rows 0..2 of a 2x4 array holding 0..8; copy columns 1..3 into a 2x2 buffer.
        let src: Vec<u8> = (0..8).collect();
        let mut dst = vec![0u8; 4];
        let region = ibox(&[0, 1], &[2, 3]);
        copy_region(&src, &ibox(&[0, 0], &[2, 4]), &mut dst, &region, &region, 1).unwrap();
        assert_eq!(dst, vec![1, 2, 5, 6]);
    }

    #[test]
    fn copies_scalar() {
        let scalar = IndexBox::full(&[]);
        let mut dst = vec![0u8; 4];
        copy_region(&[1, 2, 3, 4], &scalar, &mut dst, &scalar, &scalar, 4).unwrap();
        assert_eq!(dst, vec![1, 2, 3, 4]);
    }

    #[test]
    fn region_outside_buffer_is_rejected() {
        let src = vec![0u8; 4];
        let mut dst = vec![0u8; 4];
        let err = copy_region(
            &src,
            &ibox(&[0], &[4]),
            &mut dst,
            &ibox(&[0], &[4]),
            &ibox(&[2], &[6]),
            1,
        )
        .unwrap_err();
        assert!(matches!(err, CoreError::RegionOutOfBounds { .. }));
    }

    #[test]
    fn wrong_buffer_length_is_rejected() {
        let src = vec![0u8; 3];
        let mut dst = vec![0u8; 4];
        let b = ibox(&[0], &[4]);
        let err = copy_region(&src, &b, &mut dst, &b, &b, 1).unwrap_err();
        assert_eq!(
            err,
            CoreError::BufferSize {
                expected: 4,
                found: 3
            }
        );
    }

    /// A random array shape with two boxes inside it and a region inside both.
    fn boxes() -> impl Strategy<Value = (IndexBox, IndexBox, IndexBox, usize)> {
        prop::collection::vec((0u64..6, 0u64..6, 0u64..6, 0u64..6), 0..4)
            .prop_flat_map(|dims| {
                let item_size = prop_oneof![Just(1usize), Just(2), Just(4), Just(16)];
                (Just(dims), item_size)
            })
            .prop_map(|(dims, item_size)| {
                // Each dimension: two boxes [a0, a1) and [b0, b1) on a line, and
                // the region is their overlap, widened to a point when empty.
                let mut src = (vec![], vec![]);
                let mut dst = (vec![], vec![]);
                let mut region = (vec![], vec![]);
                for (p, q, r, s) in dims {
                    let (a0, a1) = (p.min(q), p.max(q) + 2);
                    let (b0, b1) = (r.min(s), r.max(s) + 2);
                    let lo = a0.max(b0);
                    let hi = a1.min(b1);
                    let (lo, hi, a0, b0) = if lo < hi {
                        (lo, hi, a0, b0)
                    } else {
                        (a0, a0, a0, a0.min(b0))
                    };
                    let b1 = b1.max(hi);
                    src.0.push(a0);
                    src.1.push(a1);
                    dst.0.push(b0);
                    dst.1.push(b1);
                    region.0.push(lo);
                    region.1.push(hi);
                }
                (
                    IndexBox::new(src.0, src.1).unwrap(),
                    IndexBox::new(dst.0, dst.1).unwrap(),
                    IndexBox::new(region.0, region.1).unwrap(),
                    item_size,
                )
            })
    }

    proptest! {
        #[test]
        fn matches_element_by_element_copy((src_box, dst_box, region, item_size) in boxes()) {
            let src_len = src_box.num_elements().unwrap() as usize * item_size;
            let dst_len = dst_box.num_elements().unwrap() as usize * item_size;
            let src: Vec<u8> = (0..src_len).map(|i| (i % 251) as u8 + 1).collect();
            let mut fast = vec![0u8; dst_len];
            let mut slow = vec![0u8; dst_len];
            copy_region(&src, &src_box, &mut fast, &dst_box, &region, item_size).unwrap();
            copy_reference(&src, &src_box, &mut slow, &dst_box, &region, item_size);
            prop_assert_eq!(fast, slow);
        }
    }
}
