//! Column statistics of row-major tables.

/// The mean of each of the `dim` columns of the row-major `values`
/// (`[rows, dim]`), summed in f64 in row order and divided by the row count
/// (by 1 for no rows).
pub fn column_means<T: Copy + Into<f64>>(values: &[T], dim: usize) -> Vec<f64> {
    let mut mean = vec![0f64; dim];
    if dim == 0 {
        return mean;
    }
    let rows = values.len() / dim;
    for row in values.chunks_exact(dim) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v.into();
        }
    }
    mean.iter_mut().for_each(|m| *m /= rows.max(1) as f64);
    mean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_of_columns() {
        let v = [1f32, 10.0, 3.0, 20.0, 5.0, 30.0];
        assert_eq!(column_means(&v, 2), vec![3.0, 20.0]);
        assert_eq!(column_means::<f32>(&[], 3), vec![0.0; 3]);
        assert_eq!(column_means(&[7u8, 9], 1), vec![8.0]);
    }
}
