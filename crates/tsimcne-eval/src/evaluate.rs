//! One evaluation: an embedding, the labels of its image table, and any
//! number of high-dimensional references → [`Metrics`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use tsimcne_format::vectors::{Vectors, read_vectors};
use tsimcne_format::{ImageSet, ImageTableReader, Split};

use crate::brute::Data;
use crate::error::{EvalError, Result};
use crate::knn::{k_nearest, knn_accuracy, recall};
use crate::split;

/// Where a high-dimensional reference space comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReferenceSource {
    /// The image table's pixels (u8, compared exactly).
    Pixels,
    /// A vector column of a Parquet table with `id`.
    Column { path: PathBuf, column: String },
}

/// A named reference, e.g. `pixels` or `head=runs/x/pretrain/features.parquet:head`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub name: String,
    pub source: ReferenceSource,
}

impl Reference {
    /// Parses `pixels`, `FILE:COLUMN` or `NAME=` followed by either. Without
    /// a name, `FILE:COLUMN` is called after its column.
    pub fn parse(spec: &str) -> Result<Self> {
        let (name, rest) = match spec.split_once('=') {
            Some((n, r)) if !n.is_empty() && !n.contains(['/', ':']) => (Some(n.to_string()), r),
            _ => (None, spec),
        };
        let source = if rest == "pixels" {
            ReferenceSource::Pixels
        } else {
            match rest.rsplit_once(':') {
                Some((p, c)) if !p.is_empty() && !c.is_empty() => ReferenceSource::Column {
                    path: PathBuf::from(p),
                    column: c.to_string(),
                },
                _ => {
                    return Err(EvalError::Invalid(format!(
                        "reference {spec:?}: expected `pixels` or `FILE:COLUMN`, optionally after `NAME=`"
                    )));
                }
            }
        };
        let name = name.unwrap_or_else(|| match &source {
            ReferenceSource::Pixels => "pixels".into(),
            ReferenceSource::Column { column, .. } => column.clone(),
        });
        Ok(Self { name, source })
    }
}

/// Everything one evaluation needs.
#[derive(Clone, Debug)]
pub struct EvalConfig {
    pub embedding: PathBuf,
    /// The embedding's vector column; `None` finds it (see `read_vectors`).
    pub embedding_column: Option<String>,
    pub images: PathBuf,
    pub references: Vec<Reference>,
    pub k: usize,
    /// Seeded hold-out splits.
    pub repeats: usize,
    /// Hold-out size; `None`: 10,000, or 20% of a smaller set.
    pub test_size: Option<usize>,
    /// Query points for neighbour preservation; `None`: all points.
    pub sample: Option<usize>,
    pub seed: u64,
    /// Also measure kNN accuracy in each reference space.
    pub reference_knn: bool,
    pub threads: usize,
}

/// kNN accuracy under both protocols.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Accuracy {
    /// Fit on the `train` split, score the `test` split; `None` without both.
    pub train_test: Option<f64>,
    pub holdout: Holdout,
}

/// The paper's protocol: repeated stratified hold-outs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Holdout {
    pub mean: f64,
    /// Population standard deviation (numpy's default) over the repeats.
    pub std: f64,
    pub repeats: usize,
    pub test_size: usize,
    /// One accuracy per repeat.
    pub values: Vec<f64>,
}

/// What `evaluate` writes to `metrics.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metrics {
    pub n_points: usize,
    pub k: usize,
    pub dim: usize,
    pub embedding: String,
    pub embedding_column: String,
    pub seed: u64,
    /// `None` when the image table has no labels.
    pub knn_accuracy: Option<Accuracy>,
    /// CIFAR-100's superclasses, when the table has them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knn_accuracy_coarse: Option<Accuracy>,
    pub neighbor_preservation: BTreeMap<String, f64>,
    /// How many query points the preservation averages over.
    pub neighbor_preservation_queries: usize,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub reference_knn_accuracy: BTreeMap<String, Accuracy>,
    pub seconds: f64,
}

/// An evaluation and the data a picture of it needs, in image-id order.
#[derive(Debug)]
pub struct Evaluation {
    pub metrics: Metrics,
    /// The embedding, `dim` values per point, row `i` = image id `i`.
    pub coords: Vec<f32>,
    pub labels: Vec<Option<i32>>,
    /// The image table (pixels only when a `pixels` reference needed them).
    pub images: ImageSet,
}

/// Runs one evaluation.
pub fn evaluate(cfg: &EvalConfig) -> Result<Evaluation> {
    let start = Instant::now();
    let want_pixels = cfg
        .references
        .iter()
        .any(|r| r.source == ReferenceSource::Pixels);
    let images = if want_pixels {
        ImageTableReader::open(&cfg.images)?.read_all()?
    } else {
        ImageTableReader::open_labels(&cfg.images)?.read_all()?
    };
    let n = images.len();
    let emb = read_vectors(&cfg.embedding, cfg.embedding_column.as_deref())?;
    let coords = align(
        &emb,
        n,
        &cfg.embedding,
        &format!("the image table {}", cfg.images.display()),
    )?;
    check_finite(&coords, emb.dim, &cfg.embedding)?;
    let dim = emb.dim;
    if cfg.k == 0 || cfg.k >= n {
        return Err(EvalError::Invalid(format!(
            "k = {} needs 1 ≤ k < the number of points ({n} in {})",
            cfg.k,
            cfg.embedding.display()
        )));
    }
    let mut names = std::collections::HashSet::new();
    for r in &cfg.references {
        if !names.insert(&r.name) {
            return Err(EvalError::Invalid(format!(
                "two references are called {:?}; name them with NAME=SPEC",
                r.name
            )));
        }
    }
    let emb_data = Data::F32 {
        dim,
        values: &coords,
    };

    // Labels (fine, and coarse for CIFAR-100), -1 where missing.
    let fine: Vec<i32> = images.labels.iter().map(|l| l.unwrap_or(-1)).collect();
    let knn = accuracies(emb_data, &fine, &images.splits, cfg)?;
    let knn_coarse = if images.meta.has_coarse() {
        let coarse: Vec<i32> = images
            .coarse_labels
            .iter()
            .map(|l| l.unwrap_or(-1))
            .collect();
        accuracies(emb_data, &coarse, &images.splits, cfg)?
    } else {
        None
    };

    // Neighbour preservation.
    let all: Vec<u32> = (0..n as u32).collect();
    let queries = match cfg.sample {
        Some(s) if s < n => split::sample(n, s, cfg.seed),
        _ => all.clone(),
    };
    let mut preservation = BTreeMap::new();
    let mut reference_knn = BTreeMap::new();
    if !cfg.references.is_empty() {
        let emb_nb = k_nearest(emb_data, &all, &queries, cfg.k, cfg.threads);
        for r in &cfg.references {
            let owned;
            let data = match &r.source {
                ReferenceSource::Pixels => Data::U8 {
                    dim: images.meta.image_len(),
                    values: &images.pixels,
                },
                ReferenceSource::Column { path, column } => {
                    let (values, dim) = read_aligned(
                        path,
                        Some(column),
                        n,
                        &format!("the embedding {}", cfg.embedding.display()),
                    )?;
                    owned = values;
                    Data::F32 {
                        dim,
                        values: &owned,
                    }
                }
            };
            let ref_nb = k_nearest(data, &all, &queries, cfg.k, cfg.threads);
            preservation.insert(r.name.clone(), recall(&ref_nb, &emb_nb, cfg.k));
            if cfg.reference_knn
                && let Some(acc) = accuracies(data, &fine, &images.splits, cfg)?
            {
                reference_knn.insert(r.name.clone(), acc);
            }
        }
    }

    let metrics = Metrics {
        n_points: n,
        k: cfg.k,
        dim,
        embedding: cfg.embedding.display().to_string(),
        embedding_column: emb.column.clone(),
        seed: cfg.seed,
        knn_accuracy: knn,
        knn_accuracy_coarse: knn_coarse,
        neighbor_preservation: preservation,
        neighbor_preservation_queries: if cfg.references.is_empty() {
            0
        } else {
            queries.len()
        },
        reference_knn_accuracy: reference_knn,
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok(Evaluation {
        metrics,
        coords,
        labels: images.labels.clone(),
        images,
    })
}

/// Both kNN accuracies for `labels` (-1 = unlabelled, left out), or `None`
/// when there are no labels.
fn accuracies(
    data: Data<'_>,
    labels: &[i32],
    splits: &[Split],
    cfg: &EvalConfig,
) -> Result<Option<Accuracy>> {
    let labelled: Vec<u32> = (0..labels.len() as u32)
        .filter(|&i| labels[i as usize] >= 0)
        .collect();
    if labelled.is_empty() {
        return Ok(None);
    }
    let k = cfg.k;
    let train: Vec<u32> = labelled
        .iter()
        .copied()
        .filter(|&i| splits[i as usize] == Split::Train)
        .collect();
    let test: Vec<u32> = labelled
        .iter()
        .copied()
        .filter(|&i| splits[i as usize] == Split::Test)
        .collect();
    let train_test = (train.len() > k && !test.is_empty())
        .then(|| knn_accuracy(data, labels, &train, &test, k, cfg.threads));

    let test_size = cfg
        .test_size
        .unwrap_or_else(|| split::default_test_size(labelled.len()));
    if test_size == 0 || test_size + k >= labelled.len() {
        return Err(EvalError::Invalid(format!(
            "a hold-out of {test_size} of {} labelled points leaves too few to fit k = {k}; \
             set --test-size",
            labelled.len()
        )));
    }
    let values: Vec<f64> = (0..cfg.repeats.max(1) as u64)
        .map(|r| {
            let (tr, te) = split::stratified(&labelled, labels, test_size, cfg.seed, r);
            knn_accuracy(data, labels, &tr, &te, k, cfg.threads)
        })
        .collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / values.len() as f64;
    Ok(Some(Accuracy {
        train_test,
        holdout: Holdout {
            mean,
            std: var.sqrt(),
            repeats: values.len(),
            test_size,
            values,
        },
    }))
}

/// The vectors of `v` in image-id order (`0..n`), or an error saying how
/// the ids differ.
/// The vectors of `path` (its `column`, or its one vector column) in image-id
/// order, `dim` values per row: the table must hold exactly the ids
/// `0..n` (`other` names what it is joined with, for the error), with
/// finite values. Every consumer of an embedding or feature table joins it
/// through here.
pub fn read_aligned(
    path: &Path,
    column: Option<&str>,
    n: usize,
    other: &str,
) -> Result<(Vec<f32>, usize)> {
    let v = read_vectors(path, column)?;
    let values = align(&v, n, path, other)?;
    check_finite(&values, v.dim, path)?;
    Ok((values, v.dim))
}

fn align(v: &Vectors, n: usize, path: &Path, other: &str) -> Result<Vec<f32>> {
    let shared = v.ids.iter().filter(|&&i| (i as usize) < n).count();
    if shared != n || v.len() != n {
        let detail = if shared == 0 {
            format!("shares no ids with {other} ({n} rows)")
        } else {
            format!(
                "has {} ids, {other} has {n}; only {shared} are shared (both need the same ids)",
                v.len()
            )
        };
        return Err(EvalError::Invalid(format!("{}: {detail}", path.display())));
    }
    let mut out = vec![0f32; n * v.dim];
    for (r, &id) in v.ids.iter().enumerate() {
        let id = id as usize;
        out[id * v.dim..(id + 1) * v.dim].copy_from_slice(v.row(r));
    }
    Ok(out)
}

fn check_finite(values: &[f32], dim: usize, path: &Path) -> Result<()> {
    let bad: Vec<usize> = values
        .chunks(dim)
        .enumerate()
        .filter(|(_, row)| row.iter().any(|x| !x.is_finite()))
        .map(|(i, _)| i)
        .collect();
    if let Some(first) = bad.first() {
        return Err(EvalError::Invalid(format!(
            "{}: {} points have NaN or infinite coordinates (the first is id {first})",
            path.display(),
            bad.len()
        )));
    }
    Ok(())
}

/// A few lines for a terminal: the accuracies and the preservations.
pub fn summary(m: &Metrics) -> String {
    let mut lines = Vec::new();
    let acc = |name: &str, a: &Accuracy, lines: &mut Vec<String>| {
        let h = &a.holdout;
        let tt = a
            .train_test
            .map_or(String::new(), |v| format!(", train→test {v:.4}"));
        lines.push(format!(
            "{name}kNN@{} hold-out {:.4} ± {:.4} ({} × {}){tt}",
            m.k, h.mean, h.std, h.repeats, h.test_size
        ));
    };
    match &m.knn_accuracy {
        Some(a) => acc("", a, &mut lines),
        None => lines.push("no labels: no kNN accuracy".into()),
    }
    if let Some(a) = &m.knn_accuracy_coarse {
        acc("coarse labels: ", a, &mut lines);
    }
    for (name, v) in &m.neighbor_preservation {
        lines.push(format!(
            "neighbour preservation vs {name}: {v:.4} ({} queries)",
            m.neighbor_preservation_queries
        ));
    }
    for (name, a) in &m.reference_knn_accuracy {
        acc(&format!("{name} space: "), a, &mut lines);
    }
    lines.push(format!("{} points, {:.2} s", m.n_points, m.seconds));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_specs_parse() {
        assert_eq!(
            Reference::parse("pixels").unwrap().source,
            ReferenceSource::Pixels
        );
        let r = Reference::parse("runs/a/features.parquet:head").unwrap();
        assert_eq!(r.name, "head");
        assert_eq!(
            r.source,
            ReferenceSource::Column {
                path: "runs/a/features.parquet".into(),
                column: "head".into()
            }
        );
        let r = Reference::parse("h128=f.parquet:head").unwrap();
        assert_eq!(r.name, "h128");
        let r = Reference::parse("raw=pixels").unwrap();
        assert_eq!(
            (r.name.as_str(), r.source),
            ("raw", ReferenceSource::Pixels)
        );
        for bad in ["", "f.parquet", "f.parquet:", ":head"] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}
