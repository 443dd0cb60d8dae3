//! The few conversions the readers need, from the column types they accept
//! (ours and what pandas, pyarrow and Polars write) to plain Rust values.
//!
//! In place of `arrow::compute::cast`: the `arrow` crate pulls arrow-cast,
//! arrow-ord, arrow-arith, arrow-string and arrow-row into the build, about
//! a fifth of a fresh build's CPU time, for the handful of casts below.
//! Unlike arrow's safe cast, a value out of the target's range is never
//! turned into a null: callers see it and name it.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrowPrimitiveType};
use arrow_schema::DataType;

/// The cells of an integer column of any width as `i64` (`None` for a null;
/// a `u64` above `i64::MAX` saturates), or `None` when the column is not of
/// an integer type.
pub(crate) fn integers(a: &dyn Array) -> Option<Vec<Option<i64>>> {
    fn cells<T: ArrowPrimitiveType>(
        a: &dyn Array,
        f: impl Fn(T::Native) -> i64,
    ) -> Vec<Option<i64>> {
        a.as_primitive::<T>().iter().map(|v| v.map(&f)).collect()
    }
    Some(match a.data_type() {
        DataType::Int8 => cells::<Int8Type>(a, i64::from),
        DataType::Int16 => cells::<Int16Type>(a, i64::from),
        DataType::Int32 => cells::<Int32Type>(a, i64::from),
        DataType::Int64 => cells::<Int64Type>(a, |v| v),
        DataType::UInt8 => cells::<UInt8Type>(a, i64::from),
        DataType::UInt16 => cells::<UInt16Type>(a, i64::from),
        DataType::UInt32 => cells::<UInt32Type>(a, i64::from),
        DataType::UInt64 => cells::<UInt64Type>(a, |v| i64::try_from(v).unwrap_or(i64::MAX)),
        _ => return None,
    })
}

/// The values of a float column (f16, f32 or f64) as `f32`, f64 rounded to
/// nearest; `None` when the column is not of a float type. Null slots read
/// as whatever their storage holds: check `null_count` first.
pub(crate) fn floats(a: &dyn Array) -> Option<Vec<f32>> {
    Some(match a.data_type() {
        DataType::Float16 => a
            .as_primitive::<Float16Type>()
            .values()
            .iter()
            .map(|v| v.to_f32())
            .collect(),
        DataType::Float32 => a.as_primitive::<Float32Type>().values().to_vec(),
        DataType::Float64 => a
            .as_primitive::<Float64Type>()
            .values()
            .iter()
            .map(|&v| v as f32)
            .collect(),
        _ => return None,
    })
}

/// The cells of a text column: `Utf8`, `LargeUtf8`, `Utf8View`, or a
/// dictionary of any integer key over one of them (pandas' categoricals);
/// `None` when the column is none of these.
pub(crate) fn strings(a: &dyn Array) -> Option<Vec<Option<String>>> {
    let own = |s: Option<&str>| s.map(str::to_owned);
    Some(match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().iter().map(own).collect(),
        DataType::LargeUtf8 => a.as_string::<i64>().iter().map(own).collect(),
        DataType::Utf8View => a.as_string_view().iter().map(own).collect(),
        DataType::Dictionary(_, _) => {
            let d = a.as_any_dictionary();
            let values = strings(d.values().as_ref())?;
            let keys = d.normalized_keys();
            (0..a.len())
                .map(|i| {
                    if a.is_null(i) {
                        None
                    } else {
                        values.get(keys[i]).cloned().flatten()
                    }
                })
                .collect()
        }
        _ => return None,
    })
}

/// Calls `f` with each cell of a byte column (`Binary`, `LargeBinary`,
/// `BinaryView` or `FixedSizeBinary`) in order; `false` when the column is
/// none of these.
pub(crate) fn for_each_bytes(
    a: &dyn Array,
    mut f: impl FnMut(usize, Option<&[u8]>) -> Result<(), crate::error::FormatError>,
) -> Option<Result<(), crate::error::FormatError>> {
    let mut go = |it: &mut dyn Iterator<Item = Option<&[u8]>>| -> Result<(), _> {
        for (k, v) in it.enumerate() {
            f(k, v)?;
        }
        Ok(())
    };
    Some(match a.data_type() {
        DataType::Binary => go(&mut a.as_binary::<i32>().iter()),
        DataType::LargeBinary => go(&mut a.as_binary::<i64>().iter()),
        DataType::BinaryView => go(&mut a.as_binary_view().iter()),
        DataType::FixedSizeBinary(_) => go(&mut a.as_fixed_size_binary().iter()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{
        BinaryViewArray, DictionaryArray, Float16Array, Float64Array, Int8Array, LargeStringArray,
        StringArray, UInt64Array,
    };

    use super::*;

    #[test]
    fn integers_of_every_width_and_their_nulls() {
        let a = Int8Array::from(vec![Some(-3), None, Some(7)]);
        assert_eq!(integers(&a), Some(vec![Some(-3), None, Some(7)]));
        let a = UInt64Array::from(vec![5, u64::MAX]);
        assert_eq!(integers(&a), Some(vec![Some(5), Some(i64::MAX)]));
        assert_eq!(integers(&Float64Array::from(vec![1.0])), None);
    }

    #[test]
    fn floats_round_to_nearest_f32() {
        let a = Float64Array::from(vec![0.1, 1e300]);
        assert_eq!(floats(&a), Some(vec![0.1f32, f32::INFINITY]));
        let h = Float16Array::from(vec![half_one()]);
        assert_eq!(floats(&h), Some(vec![1.0]));
    }

    fn half_one() -> <Float16Type as ArrowPrimitiveType>::Native {
        <Float16Type as ArrowPrimitiveType>::Native::from_f32(1.0)
    }

    #[test]
    fn strings_from_every_text_type_and_dictionaries() {
        let want = vec![Some("train".to_owned()), None];
        let a = StringArray::from(vec![Some("train"), None]);
        assert_eq!(strings(&a), Some(want.clone()));
        let a = LargeStringArray::from(vec![Some("train"), None]);
        assert_eq!(strings(&a), Some(want.clone()));
        let keys = Int8Array::from(vec![Some(1), None, Some(0)]);
        let d = DictionaryArray::try_new(keys, Arc::new(StringArray::from(vec!["test", "train"])))
            .unwrap();
        assert_eq!(
            strings(&d),
            Some(vec![Some("train".into()), None, Some("test".into())])
        );
        assert_eq!(strings(&Int8Array::from(vec![1])), None);
    }

    #[test]
    fn bytes_from_views() {
        let a = BinaryViewArray::from(vec![Some(&b"ab"[..]), None]);
        let mut seen = Vec::new();
        for_each_bytes(&a, |k, v| {
            seen.push((k, v.map(<[u8]>::to_vec)));
            Ok(())
        })
        .unwrap()
        .unwrap();
        assert_eq!(seen, vec![(0, Some(b"ab".to_vec())), (1, None)]);
    }
}
