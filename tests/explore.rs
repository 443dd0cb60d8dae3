//! `explore`: the page it writes, driven in headless Chromium
//! (tests/browser/explore.mjs through playwright-core), and its refusals.
//!
//! The browser part needs `node`, Chromium (`/usr/bin/chromium`, or
//! `$CHROMIUM`) and `npm ci` in tests/browser. Without them it says so and
//! skips; CI sets TSIMCNE_REQUIRE_BROWSER=1, so there a missing browser
//! fails instead.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{run, s, save_rgb};
use sha2::{Digest, Sha256};
use tsimcne_format::vectors::{KIND_FEATURES, VectorColumn, write_embedding, write_vectors};
use tsimcne_format::{ImageSet, read_image_table};

/// Class folder names a user's collection may have: HTML, a script, quotes,
/// and characters outside ASCII (the page is windows-1252, so these travel
/// as escapes).
const HOSTILE: &str = "<img src=x onerror=alert(1)>";
const CLASSES: [&str; 3] = [
    HOSTILE,
    "plain",
    "\"quoted\" & 'apostrophe' \u{b7} caf\u{e9} \u{732b} \u{1f600}",
];
const PER_CLASS: u32 = 25;

/// A folder dataset of 8×8 RGB images in three class folders (one of them
/// named like an HTML element with a script, one file named like one too),
/// prepped by the real `prep`.
fn folder_table(dir: &Path) -> (PathBuf, ImageSet) {
    let input = dir.join("photos");
    for (c, class) in CLASSES.iter().enumerate() {
        for i in 0..PER_CLASS {
            let name = if i == 0 {
                "x<svg onload=alert(2)>.png".to_string()
            } else {
                format!("{i:02}.png")
            };
            let seed = c as u32 * 97 + i * 13;
            save_rgb(&input.join(class).join(name), 8, 8, |x, y| {
                [
                    (x * 31 + seed) as u8,
                    (y * 29 + 3 * seed) as u8,
                    ((x ^ y) * 17 + c as u32 * 80) as u8,
                ]
            });
        }
    }
    let (table, set) = prep_folder(&input, dir);
    assert_eq!(set.meta.class_names.len(), CLASSES.len());
    (table, set)
}

/// `input` through the real `prep folder --size 8` into `dir/images.parquet`.
fn prep_folder(input: &Path, dir: &Path) -> (PathBuf, ImageSet) {
    let table = dir.join("images.parquet");
    let r = run(
        "prep",
        &[
            "folder",
            "--input",
            s(input),
            "--out",
            s(&table),
            "--size",
            "8",
        ],
    );
    assert!(r.ok(), "{}", r.stderr);
    let set = read_image_table(&table).unwrap();
    (table, set)
}

/// Runs tests/browser/explore.mjs on `html` (hovering `hover`, screenshots
/// into `shots`, `extra` arguments after) and returns what it saw.
fn drive(
    driver: &Path,
    html: &Path,
    hover: usize,
    shots: &Path,
    extra: &[&str],
) -> serde_json::Value {
    let output = Command::new("node")
        .arg(driver)
        .arg(html)
        .arg(hover.to_string())
        .arg(shots)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A 2-D map with one cluster per class, and `isolated` alone in the middle
/// (so the browser can hover it without another point on top).
fn map_coords(set: &ImageSet, isolated: usize) -> Vec<f32> {
    let mut rng = tsimcne_rng::SplitMix64::new(0x9e37_79b9_7f4a_7c15);
    let mut jitter = || rng.uniform(-1.0, 1.0) as f32;
    let mut coords = Vec::new();
    for (i, label) in set.labels.iter().enumerate() {
        let a = label.unwrap() as f32 * std::f32::consts::TAU / 3.0;
        let (jx, jy) = (jitter(), jitter());
        if i == isolated {
            coords.extend([0.1, -0.2]);
        } else {
            coords.extend([5.0 * a.cos() + jx, 5.0 * a.sin() + jy]);
        }
    }
    coords
}

/// The `k` nearest points to `i` by brute force, nearest first.
fn brute_nearest(coords: &[f32], i: usize, k: usize) -> Vec<u32> {
    let mut d: Vec<(f64, u32)> = (0..coords.len() / 2)
        .filter(|&j| j != i)
        .map(|j| {
            let dx = f64::from(coords[2 * j]) - f64::from(coords[2 * i]);
            let dy = f64::from(coords[2 * j + 1]) - f64::from(coords[2 * i + 1]);
            (dx * dx + dy * dy, j as u32)
        })
        .collect();
    d.sort_by(|a, b| a.partial_cmp(b).unwrap());
    d.into_iter().take(k).map(|(_, j)| j).collect()
}

/// What the browser needs, or `None` (after saying why) where it is missing
/// and CI did not ask for it.
fn browser() -> Option<PathBuf> {
    let root = common::repo_root();
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let node = Command::new("node").arg("--version").output().is_ok();
    let playwright = root
        .join("tests/browser/node_modules/playwright-core")
        .is_dir();
    let missing = [
        (!node, "node"),
        (!chromium.exists(), "chromium"),
        (!playwright, "playwright-core (npm ci in tests/browser)"),
    ]
    .iter()
    .filter(|(m, _)| *m)
    .map(|(_, what)| *what)
    .collect::<Vec<_>>();
    if missing.is_empty() {
        return Some(root.join("tests/browser/explore.mjs"));
    }
    assert!(
        std::env::var_os("TSIMCNE_REQUIRE_BROWSER").is_none(),
        "TSIMCNE_REQUIRE_BROWSER is set but {} is missing",
        missing.join(", ")
    );
    eprintln!(
        "skipping the browser checks: {} missing (CI installs them)",
        missing.join(", ")
    );
    None
}

/// The page of a labelled folder dataset with hostile names: it draws,
/// hovers, steps and zooms in Chromium, shows every name as text and runs
/// none of it, and shows the hovered image's exact pixels.
#[test]
fn the_page_draws_hovers_and_keeps_hostile_names_inert() {
    let dir = tempfile::tempdir().unwrap();
    let (table, set) = folder_table(dir.path());
    let n = set.len();
    // The image in the hostile folder with the hostile file name.
    let hover = (0..n)
        .find(|&i| {
            set.meta.class_names[set.labels[i].unwrap() as usize] == HOSTILE
                && set.paths[i].text.contains("<svg")
        })
        .unwrap();
    let coords = map_coords(&set, hover);
    let ids: Vec<u32> = (0..n as u32).collect();
    let emb = dir.path().join("finetune/embedding.parquet");
    std::fs::create_dir_all(emb.parent().unwrap()).unwrap();
    write_embedding(&emb, &ids, &set.labels, 2, &coords, &[]).unwrap();
    // A feature space in which each image's neighbours are the next ids.
    let feats: Vec<f32> = (0..n).flat_map(|i| [i as f32, 0.5]).collect();
    let features = dir.path().join("features.parquet");
    let col = VectorColumn {
        name: "backbone",
        dim: 2,
        values: &feats,
    };
    write_vectors(&features, KIND_FEATURES, &ids, &[col], &[]).unwrap();
    let metrics = dir.path().join("metrics.json");
    std::fs::write(
        &metrics,
        r#"{"k": 15, "knn_accuracy": {"holdout": {"mean": 0.5, "std": 0.01}}, "neighbor_preservation": {"<b>x</b>": 0.25}}"#,
    )
    .unwrap();
    // One page, and the same with its sheets in files beside it.
    let driver = browser();
    for (name, max_mib) in [("explore", "100"), ("explore-split", "0")] {
        let out = dir.path().join(name);
        let features_spec = format!("{}:backbone", s(&features));
        let r = run(
            "explore",
            &[
                "--embedding",
                s(&emb),
                "--images",
                s(&table),
                "--features",
                &features_spec,
                "--metrics",
                s(&metrics),
                "--neighbours",
                "5",
                "--out",
                s(&out),
                "--max-single-file",
                max_mib,
            ],
        );
        assert!(r.ok(), "{}", r.stderr);
        let html_path = out.join("map.html");
        assert!(r.stderr.contains(s(&html_path)), "{}", r.stderr);
        // ASCII up to the sheets' block, which holds raw PNG bytes (the
        // page is windows-1252) and no `<` at all.
        let page = std::fs::read(&html_path).unwrap();
        let marker = b"<script id=\"tsimcne-sheets\" type=\"application/octet-stream\">";
        let at = page
            .windows(marker.len())
            .position(|w| w == marker)
            .expect("the sheets' block")
            + marker.len();
        let end = at + page[at..].iter().position(|&b| b == b'<').unwrap();
        let (html, block) = (std::str::from_utf8(&page[..at]).unwrap(), &page[at..end]);
        assert!(html.is_ascii() && page[end..].is_ascii());
        assert_eq!(&page[end..], b"</script>\n</body>\n</html>\n");
        // Every name went in escaped: no markup from the data anywhere.
        for raw in ["<img", "<svg", "<b>x"] {
            assert!(!html.contains(raw), "{raw} reached the page unescaped");
        }
        assert!(!html.contains("http://") && !html.contains("https://"));
        // The sheets in the page, or in files beside it.
        assert_eq!(block.is_empty(), max_mib == "0");
        assert!(block.starts_with(b"\x89PNG") || block.is_empty());

        // A large page keeps its sheets in files beside it.
        let files: Vec<_> = std::fs::read_dir(out.join("map-data"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert_eq!(files.len(), usize::from(max_mib == "0"), "{files:?}");

        let Some(driver) = &driver else { continue };
        // TSIMCNE_SHOTS=DIR keeps the screenshots to look at.
        let shots = std::env::var_os("TSIMCNE_SHOTS")
            .map(|d| PathBuf::from(d).join(name))
            .unwrap_or_else(|| dir.path().join("shots").join(name));
        std::fs::create_dir_all(&shots).unwrap();
        // The one page with the points through WebGL2 (Chromium's software
        // one here, which the page takes only when asked), the other as it
        // chooses: the 2-D canvas, as where a browser has no WebGL2 on a GPU.
        let (renderer, target) = if max_mib == "0" {
            ("2d", html_path.clone())
        } else {
            let forced = format!("{}?renderer=webgl2", html_path.display());
            ("webgl2", PathBuf::from(forced))
        };
        let obs = drive(driver, &target, hover, &shots, &[]);
        assert_eq!(obs["renderer"], renderer, "{obs}");
        let empty = serde_json::json!([]);
        for key in ["dialogs", "page_errors", "console_errors", "requests"] {
            assert_eq!(obs[key], empty, "{key}: {obs}");
        }
        assert_eq!(obs["error"], serde_json::Value::Null, "{obs}");
        assert_eq!(obs["n"], n);
        assert_eq!(obs["img_elements"], 0, "an <img> from the data was made");
        assert_eq!(obs["pwned"], false);
        // Not blank: points of every class colour on white.
        let canvas = &obs["canvas"];
        assert!(canvas["ink"].as_u64().unwrap() > 300, "{canvas}");
        assert!(canvas["colours"].as_u64().unwrap() >= 3, "{canvas}");
        // The legend shows each class name as text, exactly.
        let legend: Vec<String> = serde_json::from_value(obs["legend"].clone()).unwrap();
        assert_eq!(legend, set.meta.class_names);

        // The hover card: this image's id, label, split, file and pixels.
        let card = &obs["hover"];
        assert_eq!(card["hidden"], false);
        assert_eq!(card["state"]["hover"], hover);
        // Each class's name is written on the map (three far-apart clusters).
        assert_eq!(card["state"]["labels"], 3);
        let info = &card["info"];
        assert_eq!(info["id"], hover.to_string());
        assert_eq!(info["label"], HOSTILE);
        assert_eq!(info["split"], "train");
        assert_eq!(info["file"], set.paths[hover].text.as_str());
        let sha: String = Sha256::digest(set.image(hover))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            card["rgb_sha256"], sha,
            "the card's pixels are not the image's"
        );
        // Its neighbours: in the map, and in the feature space.
        let map_nb: Vec<u32> = serde_json::from_value(card["neighbours"][0].clone()).unwrap();
        assert_eq!(map_nb, brute_nearest(&coords, hover, 5));
        let feat_nb: Vec<u32> = serde_json::from_value(card["neighbours"][1].clone()).unwrap();
        assert_eq!(feat_nb.len(), 5);
        assert!(
            feat_nb
                .iter()
                .all(|&j| (j as i64 - hover as i64).abs() <= 5)
        );
        assert_eq!(card["titles"][1], "nearest in backbone");

        // A click on a neighbour steps to it.
        let step = &obs["step"];
        assert_eq!(step["state"]["card"], step["expected"]);
        assert_eq!(step["info"]["id"], step["expected"].to_string());
        // Zoomed in, the points are thumbnails; Escape unpins.
        assert_eq!(obs["zoomed"]["state"]["mode"], "thumbnails");
        assert_eq!(obs["after_escape"]["hidden"], true);
        assert_eq!(obs["after_escape"]["pinned"], -1);

        check_selection(&obs, &set, &coords);
    }
}

/// An unlabelled collection (a folder without class folders) and a foreign
/// map (a t-SNE-like table with its own column name): the page draws, with
/// an "unlabelled" legend entry, and hovers.
#[test]
fn an_unlabelled_collection_with_a_foreign_map() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("flat");
    for i in 0..30u32 {
        save_rgb(&input.join(format!("{i:02}.png")), 8, 8, |x, y| {
            [(i * 8) as u8, (x * 30) as u8, (y * 30) as u8]
        });
    }
    let (table, set) = prep_folder(&input, dir.path());
    assert!(set.meta.class_names.is_empty());
    // A foreign table: `id` and one vector column of another name.
    let n = set.len();
    let ids: Vec<u32> = (0..n as u32).collect();
    let values: Vec<f32> = (0..n)
        .flat_map(|i| {
            let (a, r) = (i as f32 * 0.7, 1.0 + i as f32 / 10.0);
            [a.cos() * r, a.sin() * r]
        })
        .collect();
    let emb = dir.path().join("tsne.parquet");
    let col = VectorColumn {
        name: "tsne",
        dim: 2,
        values: &values,
    };
    write_vectors(&emb, KIND_FEATURES, &ids, &[col], &[]).unwrap();
    let out = dir.path().join("explore");
    let r = run(
        "explore",
        &[
            "--embedding",
            s(&emb),
            "--images",
            s(&table),
            "--out",
            s(&out),
        ],
    );
    assert!(r.ok(), "{}", r.stderr);
    let Some(driver) = browser() else { return };
    let hover = n - 1; // the outermost point of the spiral
    let obs = drive(
        &driver,
        &out.join("map.html"),
        hover,
        dir.path(),
        &["basic"],
    );
    assert_eq!(obs["page_errors"], serde_json::json!([]), "{obs}");
    assert_eq!(obs["error"], serde_json::Value::Null, "{obs}");
    assert_eq!(obs["legend"], serde_json::json!(["unlabelled"]));
    assert!(obs["canvas"]["ink"].as_u64().unwrap() > 30, "{obs}");
    let info = &obs["hover"]["info"];
    assert_eq!(info["id"], hover.to_string());
    assert_eq!(info["label"], "unlabelled");
    assert_eq!(info["file"], set.paths[hover].text.as_str());
}

/// The even-odd rule as the page applies it, in the same f64 operations.
fn in_polygon(poly: &[[f64; 2]], x: f64, y: f64) -> bool {
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for p in poly {
        (x0, x1, y0, y1) = (x0.min(p[0]), x1.max(p[0]), y0.min(p[1]), y1.max(p[1]));
    }
    if x < x0 || x > x1 || y < y0 || y > y1 {
        return false;
    }
    let mut inside = false;
    let mut b = poly.len() - 1;
    for a in 0..poly.len() {
        let ([xa, ya], [xb, yb]) = (poly[a], poly[b]);
        if (ya > y) != (yb > y) && x < ((xb - xa) * (y - ya)) / (yb - ya) + xa {
            inside = !inside;
        }
        b = a;
    }
    inside
}

fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

/// Lasso, box (added with Shift), the exports, the legend, the colouring,
/// the URL and the search, against what Rust computes from the same data.
fn check_selection(obs: &serde_json::Value, set: &ImageSet, coords: &[f32]) {
    let n = set.len();
    let ids = |v: &serde_json::Value| -> Vec<u32> { serde_json::from_value(v.clone()).unwrap() };
    let xy = |i: usize| (f64::from(coords[2 * i]), f64::from(coords[2 * i + 1]));
    // The lasso selects exactly the points inside its polygon.
    let poly: Vec<[f64; 2]> = serde_json::from_value(obs["lasso"]["polygon"].clone()).unwrap();
    assert!(poly.len() > 10, "{poly:?}");
    let lasso: Vec<u32> = (0..n)
        .filter(|&i| {
            let (x, y) = xy(i);
            in_polygon(&poly, x, y)
        })
        .map(|i| i as u32)
        .collect();
    assert!(!lasso.is_empty() && lasso.len() < n, "{lasso:?}");
    assert_eq!(ids(&obs["lasso"]["ids"]), lasso);
    // The box, with Shift, adds its points.
    let bx: [[f64; 2]; 2] = serde_json::from_value(obs["box"]["box"].clone()).unwrap();
    let in_box = |i: usize| {
        let (x, y) = xy(i);
        x >= bx[0][0].min(bx[1][0])
            && x <= bx[0][0].max(bx[1][0])
            && y >= bx[0][1].min(bx[1][1])
            && y <= bx[0][1].max(bx[1][1])
    };
    let union: Vec<u32> = (0..n)
        .filter(|&i| lasso.contains(&(i as u32)) || in_box(i))
        .map(|i| i as u32)
        .collect();
    assert!(union.len() > lasso.len(), "the box added nothing");
    assert_eq!(ids(&obs["box"]["ids"]), union);
    let panel = &obs["box"]["panel"];
    assert_eq!(panel["hidden"], false);
    assert_eq!(panel["count"], format!("{} images selected", union.len()));
    let histogram: Vec<(String, usize)> =
        serde_json::from_value(panel["histogram"].clone()).unwrap();
    for (name, count) in &histogram {
        let c = set.meta.class_names.iter().position(|x| x == name).unwrap();
        let want = union
            .iter()
            .filter(|&&i| set.labels[i as usize] == Some(c as i32))
            .count();
        assert_eq!(*count, want, "{name}");
    }
    assert_eq!(histogram.iter().map(|h| h.1).sum::<usize>(), union.len());

    // The exports hold the selection.
    let ex = &obs["exports"];
    assert_eq!(ex["csv_name"], "selection.csv");
    let mut csv = String::from("id,label,split,path\n");
    for &i in &union {
        let i = i as usize;
        let label = &set.meta.class_names[set.labels[i].unwrap() as usize];
        csv.push_str(&format!(
            "{i},{},{},{}\n",
            csv_field(label),
            set.splits[i].as_str(),
            csv_field(&set.paths[i].text)
        ));
    }
    assert_eq!(ex["csv"], csv);
    assert_eq!(ex["json_name"], "selection.json");
    assert_eq!(ids(&ex["json"]["ids"]), union);
    assert_eq!(ex["png_name"], "selection.png");
    let sheet = image::open(ex["png"].as_str().unwrap()).unwrap().to_rgb8();
    let first = union[0] as usize;
    let (w, h) = (set.meta.width, set.meta.height);
    let tile: Vec<u8> = image::imageops::crop_imm(&sheet, 1, 1, w, h)
        .to_image()
        .into_raw();
    assert_eq!(tile, set.image(first), "the contact sheet's first image");
    assert_eq!(sheet.width(), union.len() as u32 * (w + 1) + 1);

    // The URL reopens the same view, colouring, hidden class and selection.
    let (before, after) = (&obs["hash"]["before"], &obs["hash"]["after"]);
    assert!(
        obs["hash"]["url_hash"]
            .as_str()
            .unwrap()
            .contains("colour=disagreement")
    );
    assert_eq!(before["colourBy"], "disagreement");
    assert_eq!(before["hidden"], serde_json::json!([1]));
    for key in ["colourBy", "hidden", "selected", "pinned", "ids"] {
        assert_eq!(before[key], after[key], "{key}");
    }
    assert_eq!(ids(&after["ids"]), union);
    for key in ["cx", "cy", "scale"] {
        let (a, b) = (before[key].as_f64().unwrap(), after[key].as_f64().unwrap());
        assert!(
            (a - b).abs() <= 1e-6 * a.abs().max(1.0),
            "{key}: {a} vs {b}"
        );
    }

    // Searching a label selects its images.
    let plain = set
        .meta
        .class_names
        .iter()
        .position(|x| x == "plain")
        .unwrap();
    let want: Vec<u32> = (0..n)
        .filter(|&i| set.labels[i] == Some(plain as i32))
        .map(|i| i as u32)
        .collect();
    assert_eq!(ids(&obs["search"]["ids"]), want);
    assert_eq!(obs["search"]["result"], format!("{} found", want.len()));
}

/// Inputs that don't fit: one error line naming the file, exit 1, and an
/// earlier map.html left as it was.
#[test]
fn bad_inputs_are_refused_and_keep_the_earlier_page() {
    let dir = tempfile::tempdir().unwrap();
    let (table, set) = folder_table(dir.path());
    let n = set.len();
    let ids: Vec<u32> = (0..n as u32).collect();
    let coords = map_coords(&set, 0);
    let emb = dir.path().join("embedding.parquet");
    write_embedding(&emb, &ids, &set.labels, 2, &coords, &[]).unwrap();
    let out = dir.path().join("explore");
    let args = |emb: &Path, extra: &[&str]| {
        let mut a = vec![
            "--embedding".to_string(),
            s(emb).to_string(),
            "--images".to_string(),
            s(&table).to_string(),
            "--out".to_string(),
            s(&out).to_string(),
        ];
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let explore = |a: &[String]| run("explore", &a.iter().map(String::as_str).collect::<Vec<_>>());
    // The earlier page: one with its sheets beside it.
    let r = explore(&args(&emb, &["--max-single-file", "0"]));
    assert!(r.ok(), "{}", r.stderr);
    let folder = |out: &Path| -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(out.join("map-data"))
            .map(|d| {
                d.flatten()
                    .map(|e| {
                        (
                            e.file_name().to_string_lossy().into_owned(),
                            std::fs::read(e.path()).unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    };
    let good = std::fs::read(out.join("map.html")).unwrap();
    let good_files = folder(&out);
    assert_eq!(good_files.len(), 1);

    // An embedding of other ids.
    let short = dir.path().join("short.parquet");
    write_embedding(
        &short,
        &ids[..n - 1],
        &set.labels[..n - 1],
        2,
        &coords[..2 * (n - 1)],
        &[],
    )
    .unwrap();
    explore(&args(&short, &[])).assert_user_error("short.parquet", &["ids"]);
    // A 1-D embedding.
    let line = dir.path().join("line.parquet");
    write_embedding(&line, &ids, &set.labels, 1, &coords[..n], &[]).unwrap();
    explore(&args(&line, &[])).assert_user_error("line.parquet", &["1-D"]);
    // A feature table of the wrong length, a bad feature spec.
    let feats = dir.path().join("feats.parquet");
    let values = vec![0.5f32; 3 * (n - 2)];
    let col = VectorColumn {
        name: "backbone",
        dim: 3,
        values: &values,
    };
    write_vectors(&feats, KIND_FEATURES, &ids[..n - 2], &[col], &[]).unwrap();
    let spec = format!("{}:backbone", s(&feats));
    explore(&args(&emb, &["--features", &spec])).assert_user_error("feats.parquet", &["ids"]);
    explore(&args(&emb, &["--features", s(&feats)]))
        .assert_user_error("feats.parquet", &["FILE:COLUMN"]);
    // metrics.json that is not JSON, or missing.
    let bad = dir.path().join("metrics.json");
    std::fs::write(&bad, "kNN 0.9").unwrap();
    explore(&args(&emb, &["--metrics", s(&bad)])).assert_user_error("metrics.json", &["not JSON"]);
    let gone = dir.path().join("gone.json");
    explore(&args(&emb, &["--metrics", s(&gone)])).assert_user_error("gone.json", &["read"]);
    // A table that is not an image table.
    let r = run(
        "explore",
        &[
            "--embedding",
            s(&emb),
            "--images",
            s(&emb),
            "--out",
            s(&out),
        ],
    );
    r.assert_user_error("embedding.parquet", &[]);

    assert_eq!(std::fs::read(out.join("map.html")).unwrap(), good);
    assert_eq!(folder(&out), good_files);

    // A page of one file replaces it, and the files it no longer needs go.
    let r = explore(&args(&emb, &[]));
    assert!(r.ok(), "{}", r.stderr);
    assert!(!out.join("map-data").exists());
}
