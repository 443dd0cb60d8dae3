//! The stage names as links to the one executable (`tsimcne --link-stages
//! DIR`, which `make build` runs).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::stages::STAGES;

/// Makes `dir/<stage>` for every stage a link to this executable, replacing
/// whatever was there (an older build's separate binaries) atomically. The
/// link is relative when `dir` holds a file named like this executable (the
/// build folder, or a package being assembled), absolute otherwise.
pub fn link_stages(dir: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let name = exe
        .file_name()
        .context("this executable has no file name")?;
    let (target, source) = if dir.join(name).is_file() {
        (PathBuf::from(name), dir.join(name))
    } else {
        (exe.clone(), exe.clone())
    };
    for st in &STAGES {
        let path = dir.join(st.name);
        let tmp = dir.join(format!(".{}.link-{}", st.name, std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        make_link(&target, &source, &tmp)
            .with_context(|| format!("{}: making a link to {}", tmp.display(), exe.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("{}: replacing it", path.display()))?;
    }
    Ok(())
}

#[cfg(unix)]
fn make_link(target: &Path, _source: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

/// Elsewhere a hard link (symbolic links need privileges on Windows).
#[cfg(not(unix))]
fn make_link(_target: &Path, source: &Path, link: &Path) -> std::io::Result<()> {
    std::fs::hard_link(source, link)
}
