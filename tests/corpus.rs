//! The bad-input corpus, `tests/corpus/`: every entry of
//! `tests/corpus/manifest.txt` is copied into a scratch folder and given to
//! the real binary; each must fail with exit code 1 and exactly one line on
//! stderr, `error: …`, naming the entry and saying what is wrong, with no
//! panic and no backtrace (`RUST_BACKTRACE=1` is set to make one show), and
//! must leave its input untouched and no output behind.
//!
//! The corpus files are committed; [`generate`] writes them, and a test
//! checks that it still writes exactly them (`tests/corpus/generate.sh`
//! rewrites them).

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, Int32Array, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{Field, Schema};
use common::*;
use tsimcne_format::model_config::{InputShape, MODEL_CONFIG_VERSION, ModelConfig, TrainingConfig};
use tsimcne_format::{ImageMeta, ImageSet, Split};

fn corpus_dir() -> PathBuf {
    repo_root().join("tests/corpus")
}

fn binary(name: &str) -> PathBuf {
    assert!(
        tsimcne_cli::stages::stage(name).is_some(),
        "manifest names an unknown stage {name:?}"
    );
    stage(name)
}

/// One manifest line: `entry | command | expected text`.
#[derive(Debug)]
struct Entry {
    name: String,
    command: Vec<String>,
    expect: String,
}

fn manifest() -> Vec<Entry> {
    let text = std::fs::read_to_string(corpus_dir().join("manifest.txt")).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let parts: Vec<&str> = l.split(" | ").map(str::trim).collect();
            assert_eq!(parts.len(), 3, "manifest line {l:?}");
            Entry {
                name: parts[0].to_string(),
                command: parts[1].split_whitespace().map(String::from).collect(),
                expect: parts[2].to_string(),
            }
        })
        .collect()
}

/// Every file below `p` (or `p` itself) with its bytes, by relative path.
fn snapshot(p: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(q) = stack.pop() {
        if q.is_dir() {
            for e in std::fs::read_dir(&q).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if let Ok(bytes) = std::fs::read(&q) {
            out.insert(q.strip_prefix(p).unwrap().to_path_buf(), bytes);
        }
    }
    out
}

fn copy_entry(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            copy_entry(&e.path(), &to.join(e.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}

#[test]
fn every_corpus_entry_gets_one_clear_error() {
    let entries = manifest();
    assert!(entries.len() >= 40, "{} entries", entries.len());
    let mut listed: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
    listed.sort();
    let mut on_disk: Vec<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !matches!(
                n.as_str(),
                "manifest.txt" | "README.md" | "generate.sh" | "good" | "fuzz"
            )
        })
        .collect();
    on_disk.sort();
    assert_eq!(
        listed, on_disk,
        "every corpus file has exactly one manifest line"
    );

    let scratch = tempfile::tempdir().unwrap();
    let good = scratch.path().join("good");
    copy_entry(&corpus_dir().join("good"), &good);
    let mut failures = Vec::new();
    for e in &entries {
        let tmp = scratch.path().join(format!("run-{}", e.name));
        std::fs::create_dir_all(&tmp).unwrap();
        let input = tmp.join(&e.name);
        copy_entry(&corpus_dir().join(&e.name), &input);
        let before = snapshot(&input);
        let fill = |a: &str| {
            a.replace("{in}", s(&input))
                .replace("{tmp}", s(&tmp))
                .replace("{good}", s(&good))
        };
        let out = Command::new(binary(&e.command[0]))
            .args(e.command[1..].iter().map(|a| fill(a)))
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut problems = Vec::new();
        if out.status.code() != Some(1) {
            problems.push(format!("exit {:?}", out.status.code()));
        }
        if lines.len() != 1 {
            problems.push(format!("{} lines on stderr", lines.len()));
        }
        let line = lines.first().copied().unwrap_or("");
        if !line.starts_with("error: ") {
            problems.push("no `error: ` line".into());
        }
        if !line.contains(&e.name) {
            problems.push("the file is not named".into());
        }
        if !line.contains(&e.expect) {
            problems.push(format!("does not say {:?}", e.expect));
        }
        let lower = stderr.to_lowercase();
        if lower.contains("panicked") || lower.contains("backtrace") {
            problems.push("a panic or a backtrace".into());
        }
        if snapshot(&input) != before {
            problems.push("the input changed".into());
        }
        let outputs: Vec<String> = std::fs::read_dir(&tmp)
            .unwrap()
            .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| *n != e.name)
            .collect();
        if !outputs.is_empty() {
            problems.push(format!("left {outputs:?} behind"));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n    stderr: {}",
                e.name,
                problems.join("; "),
                stderr.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} entries:\n{}",
        failures.len(),
        entries.len(),
        failures.join("\n")
    );
}

/// The good inputs the corpus entries are cut from work: so each entry's
/// error comes from its own defect.
#[test]
fn the_good_inputs_are_accepted() {
    let scratch = tempfile::tempdir().unwrap();
    let good = corpus_dir().join("good");
    let out = scratch.path().join("e.parquet");
    let r = run(
        "embed",
        &[
            "--model",
            s(&good.join("model")),
            "--images",
            s(&good.join("images.parquet")),
            "--out",
            s(&out),
        ],
    );
    assert!(r.ok(), "{}", r.stderr);
    let r = run(
        "prep",
        &[
            "mnist",
            "--input",
            s(&good.join("idx")),
            "--out",
            s(&scratch.path().join("m.parquet")),
        ],
    );
    assert!(r.ok(), "{}", r.stderr);
    let r = run(
        "prep",
        &[
            "cifar10",
            "--no-verify",
            "--input",
            s(&good.join("cifar10.tar.gz")),
            "--out",
            s(&scratch.path().join("c.parquet")),
        ],
    );
    assert!(r.ok(), "{}", r.stderr);
    let r = run(
        "prep",
        &[
            "folder",
            "--input",
            s(&good.join("folder")),
            "--out",
            s(&scratch.path().join("f.parquet")),
        ],
    );
    assert!(r.ok(), "{}", r.stderr);
}

// ---------------------------------------------------------------------------
// The generator.

/// A model smaller than `tiny`: the corpus stays a few kilobytes.
fn micro_arch() -> tsimcne_model::ResNetArch {
    tsimcne_model::ResNetArch {
        in_channels: 1,
        widths: vec![2, 2, 2, 2],
        blocks: vec![1, 1, 1, 1],
        head_hidden: 4,
        out_dim: 2,
    }
}

fn micro_config() -> ModelConfig {
    ModelConfig {
        format_version: MODEL_CONFIG_VERSION,
        stage: "finetune".into(),
        arch: micro_arch(),
        input: InputShape {
            height: 28,
            width: 28,
            channels: 1,
        },
        normalize: None,
        training: TrainingConfig {
            backbone: "custom".into(),
            epochs: 1,
            batch_size: 4,
            lr: 0.0,
            warmup: 0,
            seed: 0,
            loss: "cauchy".into(),
            momentum: 0.9,
            weight_decay: 5e-4,
            clip_value: Some(4.0),
            images_checksum: "md5:0".into(),
            images_rows: 8,
            from: None,
            init: None,
            augment: None,
            map_scale: None,
            freeze_layers: 0,
            threads: 1,
            checkpoint_every: 1,
            device: None,
            conv_math: None,
            gpu_path: None,
        },
    }
}

/// One tensor of a hand-made safetensors file.
struct Tensor {
    name: String,
    dtype: String,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn tensors_of(bytes: &[u8]) -> Vec<Tensor> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let mut out: Vec<Tensor> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| Tensor {
            name,
            dtype: format!("{:?}", v.dtype()),
            shape: v.shape().to_vec(),
            data: v.data().to_vec(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Safetensors bytes: little-endian header length, JSON header, data.
fn safetensors_bytes(tensors: &[Tensor]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0;
    for t in tensors {
        header.insert(
            t.name.clone(),
            serde_json::json!({
                "dtype": t.dtype,
                "shape": t.shape,
                "data_offsets": [offset, offset + t.data.len()],
            }),
        );
        offset += t.data.len();
    }
    let mut h = serde_json::Value::Object(header).to_string();
    while !h.len().is_multiple_of(8) {
        h.push(' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h.as_bytes());
    for t in tensors {
        out.extend(&t.data);
    }
    out
}

fn fashion_names() -> Vec<String> {
    tsimcne_data::idx::FASHION_MNIST_CLASSES
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn good_set(n: usize) -> ImageSet {
    ImageSet {
        meta: ImageMeta {
            height: 28,
            width: 28,
            channels: 1,
            class_names: fashion_names(),
            coarse_class_names: None,
            source: "fashion-mnist".into(),
            source_checksum: "md5:0".into(),
            subset: None,
        },
        splits: vec![Split::Train; n],
        labels: (0..n).map(|i| Some((i % 10) as i32)).collect(),
        coarse_labels: Vec::new(),
        pixels: (0..n * 784).map(|i| (i * 37 % 251) as u8).collect(),
        paths: Vec::new(),
    }
}

/// An image table written column by column, for shapes our writer refuses.
fn raw_table(path: &Path, kv: &[(&str, String)], columns: Vec<(&str, ArrayRef)>) {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch =
        RecordBatch::try_new(schema.clone(), columns.into_iter().map(|c| c.1).collect()).unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_key_value_metadata(Some(
            kv.iter()
                .map(|(k, v)| parquet::file::metadata::KeyValue::new(k.to_string(), v.clone()))
                .collect(),
        ))
        .set_created_by("tsimcne corpus".into())
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn image_kv(version: &str, h: u32, w: u32) -> Vec<(&'static str, String)> {
    use tsimcne_format::image_table::meta_key as k;
    vec![
        (k::KIND, "images".into()),
        (k::FORMAT_VERSION, version.into()),
        (k::HEIGHT, h.to_string()),
        (k::WIDTH, w.to_string()),
        (k::CHANNELS, "1".into()),
        (
            k::CLASS_NAMES,
            serde_json::to_string(&fashion_names()).unwrap(),
        ),
        (k::SOURCE, "fashion-mnist".into()),
        (k::SOURCE_CHECKSUM, "md5:0".into()),
    ]
}

/// The columns of `n` rows of 28×28 images, with `ids`, `labels` and the
/// image cells given.
fn image_columns(
    ids: Vec<u32>,
    labels: Vec<Option<i32>>,
    cell: usize,
) -> Vec<(&'static str, ArrayRef)> {
    let n = ids.len();
    let cells: Vec<Vec<u8>> = (0..n).map(|i| vec![(i * 7) as u8; cell]).collect();
    vec![
        ("id", Arc::new(UInt32Array::from(ids)) as ArrayRef),
        ("split", Arc::new(StringArray::from(vec!["train"; n]))),
        ("label", Arc::new(Int32Array::from(labels))),
        (
            "image",
            Arc::new(BinaryArray::from_iter_values(cells.iter())),
        ),
    ]
}

fn flip(bytes: &mut [u8], at: usize, len: usize) {
    for b in &mut bytes[at..at + len] {
        *b ^= 0x5a;
    }
}

/// A tar header for `name` claiming `size` bytes, of entry type `kind`.
fn tar_header(name: &str, size: u64, kind: tar::EntryType, link: Option<&str>) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    {
        let n = &mut h.as_old_mut().name;
        n.fill(0);
        n[..name.len()].copy_from_slice(name.as_bytes());
    }
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    if let Some(l) = link {
        h.set_link_name(l).unwrap();
    }
    h.set_cksum();
    h.as_bytes().to_vec()
}

fn cifar10_archive(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let m: Vec<Member<'_>> = members
        .iter()
        .map(|(n, d)| Member { name: n, data: d })
        .collect();
    tar_bytes(&m, false)
}

fn png_bytes(w: u32, h: u32) -> Vec<u8> {
    let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 9 + y * 5) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A PNG whose header claims `w`×`h` grey pixels, with the image data of a
/// single row: a valid header over a file of a hundred bytes.
fn png_header_bomb(w: u32, h: u32) -> Vec<u8> {
    let chunk = |out: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend((data.len() as u32).to_be_bytes());
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
    };
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]); // 8-bit grey, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &stored_zlib(&[0; 9]));
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A zlib stream of stored (uncompressed) blocks.
fn stored_zlib(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01, 1];
    let n = data.len() as u16;
    out.extend(n.to_le_bytes());
    out.extend((!n).to_le_bytes());
    out.extend_from_slice(data);
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    out.extend(((b << 16) | a).to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// The corpus and the fuzz seeds are what [`generate`] writes, byte for
/// byte: the generator is deterministic, so a change to it (or to a writer
/// it calls) that would change a committed file fails here. With
/// `TSIMCNE_REGENERATE_CORPUS=1` (`tests/corpus/generate.sh`) the test
/// rewrites `tests/corpus` and `fuzz/seeds` in place instead.
#[test]
fn the_corpus_is_what_its_generator_writes() {
    if std::env::var_os("TSIMCNE_REGENERATE_CORPUS").is_some() {
        let c = corpus_dir();
        for e in std::fs::read_dir(&c).unwrap() {
            let e = e.unwrap();
            let n = e.file_name().to_string_lossy().into_owned();
            if is_hand_written(&n) {
                continue;
            }
            if e.path().is_dir() {
                std::fs::remove_dir_all(e.path()).unwrap();
            } else {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
        let seeds = repo_root().join("fuzz/seeds");
        let _ = std::fs::remove_dir_all(&seeds);
        generate(&c, &seeds);
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let (c, seeds) = (scratch.path().join("corpus"), scratch.path().join("seeds"));
    generate(&c, &seeds);
    let committed: BTreeMap<PathBuf, Vec<u8>> = snapshot(&corpus_dir())
        .into_iter()
        .filter(|(p, _)| {
            let top = p.components().next().unwrap();
            !is_hand_written(&top.as_os_str().to_string_lossy())
        })
        .collect();
    let fresh = snapshot(&c);
    let names = |m: &BTreeMap<PathBuf, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&fresh),
        names(&committed),
        "tests/corpus differs from its generator's files: run tests/corpus/generate.sh"
    );
    for (p, bytes) in &fresh {
        assert!(
            committed[p] == *bytes,
            "tests/corpus/{} differs from what the generator writes: run tests/corpus/generate.sh",
            p.display()
        );
    }
    let fresh = snapshot(&seeds);
    let committed = snapshot(&repo_root().join("fuzz/seeds"));
    assert!(
        fresh == committed,
        "fuzz/seeds differs from what the generator writes: run tests/corpus/generate.sh"
    );
}

/// Files in tests/corpus written by hand or kept from fuzzing
/// (`fuzz/`, `*-fuzz-*`), which [`generate`] leaves alone.
fn is_hand_written(name: &str) -> bool {
    matches!(name, "manifest.txt" | "README.md" | "generate.sh" | "fuzz") || name.contains("-fuzz-")
}

/// Writes the generated part of the corpus into `c` and the fuzz seeds
/// into `seeds`. Deterministic.
fn generate(c: &Path, seeds: &Path) {
    let good = c.join("good");
    std::fs::create_dir_all(&good).unwrap();

    // Good inputs.
    let images = good.join("images.parquet");
    tsimcne_format::write_image_table(&images, &good_set(8)).unwrap();
    let table = std::fs::read(&images).unwrap();
    let model_dir = good.join("model");
    std::fs::create_dir_all(&model_dir).unwrap();
    let model = tsimcne_model::Model::new(&micro_arch(), 0, &candle_core::Device::Cpu).unwrap();
    let model_bytes = model.to_safetensors().unwrap();
    write(&model_dir.join("model.safetensors"), &model_bytes);
    micro_config().save(&model_dir.join("config.json")).unwrap();
    let config_text = std::fs::read_to_string(model_dir.join("config.json")).unwrap();
    let idx_images = idx_bytes(0x803, &[2, 28, 28], &[7; 2 * 784]);
    let idx_labels = idx_bytes(0x801, &[2], &[1, 2]);
    write(&good.join("idx/t10k-images-idx3-ubyte"), &idx_images);
    write(
        &good.join("idx/t10k-labels-idx1-ubyte.gz"),
        &gzip(&idx_labels),
    );
    let members = cifar10_members(1);
    let archive = cifar10_archive(&members);
    write(&good.join("cifar10.tar.gz"), &gzip(&archive));
    write(&good.join("folder/a.png"), &png_bytes(8, 8));
    write(&good.join("folder/b.png"), &png_bytes(8, 8));

    // Image tables (Parquet).
    write(
        &c.join("images-truncated.parquet"),
        &table[..table.len() / 2],
    );
    write(
        &c.join("images-no-footer.parquet"),
        &table[..table.len() - 8],
    );
    write(&c.join("images-empty.parquet"), b"");
    write(
        &c.join("images-text.parquet"),
        b"id,split,label\n0,train,1\n",
    );
    let mut t = table.clone();
    flip(&mut t, 4, 64); // the first column chunk's page header and data
    write(&c.join("images-corrupt-data.parquet"), &t);
    let mut t = table.clone();
    let footer = u32::from_le_bytes(t[t.len() - 8..t.len() - 4].try_into().unwrap()) as usize;
    let start = t.len() - 8 - footer;
    flip(&mut t, start, 16); // the start of the Thrift footer
    write(&c.join("images-corrupt-footer.parquet"), &t);
    let mut t = table.clone();
    let n = t.len();
    t[n - 8..n - 4].copy_from_slice(&(u32::MAX - 16).to_le_bytes()); // a footer longer than the file
    write(&c.join("images-huge-footer-length.parquet"), &t);
    let labels: Vec<Option<i32>> = (0..4).map(Some).collect();
    raw_table(
        &c.join("images-newer-version.parquet"),
        &image_kv("2", 28, 28),
        image_columns((0..4).collect(), labels.clone(), 784),
    );
    raw_table(
        &c.join("images-bad-ids.parquet"),
        &image_kv("1", 28, 28),
        image_columns(vec![0, 1, 3, 2], labels.clone(), 784),
    );
    raw_table(
        &c.join("images-short-cell.parquet"),
        &image_kv("1", 28, 28),
        image_columns((0..4).collect(), labels.clone(), 700),
    );
    raw_table(
        &c.join("images-huge-dims.parquet"),
        &image_kv("1", 32768, 32768),
        image_columns((0..4).collect(), labels.clone(), 784),
    );
    raw_table(
        &c.join("images-bad-label.parquet"),
        &image_kv("1", 28, 28),
        image_columns(
            (0..4).collect(),
            vec![Some(0), Some(12), None, Some(1)],
            784,
        ),
    );
    let mut cols = image_columns((0..4).collect(), labels.clone(), 784);
    cols[3].1 = Arc::new(Int32Array::from(vec![1, 2, 3, 4]));
    raw_table(
        &c.join("images-image-not-binary.parquet"),
        &image_kv("1", 28, 28),
        cols,
    );
    let mut kv = image_kv("1", 28, 28);
    kv.retain(|(k, _)| *k != "tsimcne.height");
    raw_table(
        &c.join("images-no-height.parquet"),
        &kv,
        image_columns((0..4).collect(), labels.clone(), 784),
    );
    let mut kv = image_kv("1", 28, 28);
    kv[0].1 = "features".into();
    raw_table(
        &c.join("images-wrong-kind.parquet"),
        &kv,
        image_columns((0..4).collect(), labels, 784),
    );
    let emb = c.join("embedding-truncated.parquet");
    tsimcne_format::vectors::write_embedding(&emb, &[0, 1, 2, 3], &[Some(0); 4], 2, &[0.5; 8], &[])
        .unwrap();
    let e = std::fs::read(&emb).unwrap();
    write(&emb, &e[..e.len() * 2 / 3]);

    // IDX files (prep mnist).
    let lab = |n: u32| gzip(&idx_bytes(0x801, &[n], &vec![3; n as usize]));
    let pair = |dir: &str, images: Vec<u8>, labels: Vec<u8>| {
        write(&c.join(dir).join("t10k-images-idx3-ubyte"), &images);
        write(&c.join(dir).join("t10k-labels-idx1-ubyte.gz"), &labels);
    };
    pair(
        "idx-truncated",
        idx_images[..idx_images.len() - 100].to_vec(),
        lab(2),
    );
    pair(
        "idx-bad-magic",
        idx_bytes(0x802, &[2, 28], &[0; 56]),
        lab(2),
    );
    pair(
        "idx-huge-count",
        idx_bytes(0x803, &[u32::MAX, 28, 28], &[1; 784]),
        lab(2),
    );
    pair("idx-zero-side", idx_bytes(0x803, &[2, 0, 28], &[]), lab(2));
    pair("idx-header-only", idx_images[..10].to_vec(), lab(2));
    pair("idx-label-count", idx_images.clone(), lab(3));
    pair(
        "idx-label-range",
        idx_images.clone(),
        gzip(&idx_bytes(0x801, &[2], &[1, 200])),
    );
    let mut gz = gzip(&idx_images);
    let m = gz.len() / 2;
    flip(&mut gz, m, 8);
    pair("idx-corrupt-gzip", gz, lab(2));
    let gz = gzip(&idx_images);
    pair("idx-truncated-gzip", gz[..gz.len() - 6].to_vec(), lab(2));
    write(
        &c.join("idx-images-alone/t10k-images-idx3-ubyte"),
        &idx_images,
    );

    // CIFAR archives (prep cifar10 --no-verify).
    let gz = gzip(&archive);
    write(&c.join("cifar10-truncated.tar.gz"), &gz[..gz.len() / 2]);
    let mut bad = gz.clone();
    let m = bad.len() / 2;
    flip(&mut bad, m, 8);
    write(&c.join("cifar10-corrupt.tar.gz"), &bad);
    write(
        &c.join("cifar10-not-an-archive.tar.gz"),
        b"<html>404 not found</html>\n",
    );
    write(&c.join("cifar10-official-name.tar.gz"), &gz); // checked against the official MD5
    #[allow(clippy::type_complexity)]
    let with = |edit: &dyn Fn(&mut Vec<(String, Vec<u8>)>)| {
        let mut m = members.clone();
        edit(&mut m);
        cifar10_archive(&m)
    };
    write(
        &c.join("cifar10-traversal.tar"),
        &with(&|m| m[0].0 = "../cifar-10-batches-bin/data_batch_1.bin".into()),
    );
    write(
        &c.join("cifar10-absolute.tar"),
        &with(&|m| m.insert(0, ("/etc/cron.d/evil".into(), b"x".to_vec()))),
    );
    write(
        &c.join("cifar10-nested-traversal.tar"),
        &with(&|m| m.insert(0, ("cifar-10-batches-bin/../../x".into(), b"x".to_vec()))),
    );
    write(
        &c.join("cifar10-missing-member.tar"),
        &with(&|m| {
            m.remove(5);
        }),
    );
    write(
        &c.join("cifar10-duplicate-member.tar"),
        &with(&|m| {
            let d = m[1].clone();
            m.push(d);
        }),
    );
    write(
        &c.join("cifar10-ragged-batch.tar"),
        &with(&|m| {
            m[2].1.pop();
        }),
    );
    write(
        &c.join("cifar10-label-range.tar"),
        &with(&|m| m[0].1[0] = 10),
    );
    write(
        &c.join("cifar10-wrong-names.tar"),
        &with(&|m| {
            m[6].1 = b"airplane\ncar\n".to_vec();
        }),
    );
    // A member whose header claims far more than the official size, and a
    // symbolic link where a batch should be.
    let mut t = tar_header(
        "cifar-10-batches-bin/data_batch_1.bin",
        1 << 40,
        tar::EntryType::Regular,
        None,
    );
    t.extend([0u8; 1024]);
    write(&c.join("cifar10-oversized-member.tar"), &t);
    let mut t = tar_header(
        "cifar-10-batches-bin/data_batch_1.bin",
        0,
        tar::EntryType::Symlink,
        Some("/etc/passwd"),
    );
    t.extend([0u8; 1024]);
    write(&c.join("cifar10-symlink-member.tar"), &t);

    // Model directories and bare safetensors files (embed --model).
    let base = tensors_of(&model_bytes);
    let model_case = |name: &str, tensors: &[Tensor]| {
        write(
            &c.join(name).join("model.safetensors"),
            &safetensors_bytes(tensors),
        );
        write(&c.join(name).join("config.json"), config_text.as_bytes());
    };
    let edited = |f: &dyn Fn(&mut Vec<Tensor>)| {
        let mut t: Vec<Tensor> = base
            .iter()
            .map(|t| Tensor {
                name: t.name.clone(),
                dtype: t.dtype.clone(),
                shape: t.shape.clone(),
                data: t.data.clone(),
            })
            .collect();
        f(&mut t);
        t
    };
    let find = |t: &[Tensor], n: &str| t.iter().position(|x| x.name == n).unwrap();
    model_case(
        "model-wrong-dtype",
        &edited(&|t| {
            let i = find(t, "backbone.bn1.weight");
            t[i].dtype = "F64".into();
            let d = t[i].data.clone();
            t[i].data = d
                .chunks(4)
                .flat_map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes())
                .collect();
        }),
    );
    model_case(
        "model-wrong-shape",
        &edited(&|t| {
            let i = find(t, "projection_head.layers.2.weight");
            t[i].shape = vec![4, 2];
        }),
    );
    model_case(
        "model-missing-tensor",
        &edited(&|t| {
            let i = find(t, "backbone.layer2.0.conv1.weight");
            t.remove(i);
        }),
    );
    model_case(
        "model-extra-tensor",
        &edited(&|t| {
            t.push(Tensor {
                name: "backbone.fc.weight".into(),
                dtype: "F32".into(),
                shape: vec![1],
                data: vec![0; 4],
            })
        }),
    );
    let trunc = safetensors_bytes(&base);
    write(
        &c.join("model-truncated/model.safetensors"),
        &trunc[..trunc.len() - 40],
    );
    write(
        &c.join("model-truncated/config.json"),
        config_text.as_bytes(),
    );
    let mut huge = (u64::MAX / 2).to_le_bytes().to_vec();
    huge.extend(b"{}      ");
    write(&c.join("model-huge-header.safetensors"), &huge);
    let mut over = safetensors_bytes(&base);
    // Point the first tensor's data far beyond the file.
    let h = u64::from_le_bytes(over[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(over[8..8 + h].to_vec()).unwrap();
    let header = header.replacen("\"data_offsets\":[0,", "\"data_offsets\":[9,", 1);
    over.splice(8..8 + h, header.into_bytes());
    write(&c.join("model-bad-offsets.safetensors"), &over);
    write(
        &c.join("model-not-safetensors.safetensors"),
        b"PK\x03\x04 a zip file, as torch.save writes\n",
    );
    write(&c.join("model-no-config/model.safetensors"), &model_bytes);
    write(&c.join("model-unfinished/model.safetensors"), &model_bytes);
    write(
        &c.join("model-unfinished/checkpoint.safetensors"),
        &model_bytes,
    );

    // config.json.
    let config_case = |name: &str, text: String| {
        write(&c.join(name).join("config.json"), text.as_bytes());
        write(&c.join(name).join("model.safetensors"), &model_bytes);
    };
    config_case(
        "config-unknown-key",
        config_text.replacen("\"stage\"", "\"learning_rate\": 0.1,\n  \"stage\"", 1),
    );
    config_case(
        "config-wrong-type",
        config_text.replacen("\"epochs\": 1", "\"epochs\": \"one\"", 1),
    );
    config_case(
        "config-newer-version",
        config_text.replacen("\"format_version\": 1", "\"format_version\": 99", 1),
    );
    config_case(
        "config-not-json",
        config_text[..config_text.len() / 2].to_string(),
    );
    config_case(
        "config-huge-arch",
        config_text.replacen(
            "\"blocks\": [\n      1,",
            "\"blocks\": [\n      1000000000000,",
            1,
        ),
    );
    config_case(
        "config-channels",
        config_text.replacen("\"in_channels\": 1", "\"in_channels\": 3", 1),
    );

    // A checkpoint that is not one, in the output folder of a rerun.
    write(
        &c.join("checkpoint-corrupt/checkpoint.safetensors"),
        &trunc[..100],
    );

    // Image folders (prep folder).
    write(
        &c.join("folder-not-an-image/a.png"),
        b"this is a text file named a.png\n",
    );
    write(&c.join("folder-not-an-image/b.png"), &png_bytes(8, 8));
    let png = png_bytes(8, 8);
    write(&c.join("folder-truncated-png/a.png"), &png[..png.len() / 2]);
    write(&c.join("folder-truncated-png/b.png"), &png);
    write(&c.join("folder-empty-jpeg/a.jpg"), b"");
    write(
        &c.join("folder-header-bomb/a.png"),
        &png_header_bomb(30_000, 30_000),
    );
    write(
        &c.join("folder-header-bomb/b.png"),
        &png_header_bomb(30_000, 30_000),
    );
    write(
        &c.join("folder-too-large/a.png"),
        &png_header_bomb(40_000, 8),
    );

    // Seeds of the fuzz targets (fuzz/harness.rs says how each reads its input).
    let one_image = idx_bytes(0x803, &[1, 28, 28], &[5; 784]);
    let seed = |target: &str, name: &str, head: &[u8], body: &[u8]| {
        let mut b = head.to_vec();
        b.extend_from_slice(body);
        write(&seeds.join(target).join(name), &b);
    };
    seed("idx", "images", &[0], &one_image);
    seed("idx", "images-gz", &[0], &gzip(&one_image));
    seed(
        "idx",
        "labels-gz",
        &[1],
        &gzip(&idx_bytes(0x801, &[1], &[7])),
    );
    seed("cifar", "cifar10-tar-gz", &[0], &gzip(&archive));
    seed(
        "cifar",
        "cifar100-tar",
        &[1],
        &cifar10_archive(&cifar100_members(1, 1)),
    );
    seed("image_table", "images", &[], &table);
    let len = (config_text.len() as u16).to_le_bytes();
    let mut body = config_text.as_bytes().to_vec();
    body.extend(&model_bytes);
    seed("model", "micro", &len, &body);
}
