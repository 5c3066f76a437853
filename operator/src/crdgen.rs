//! Writes the Store CRD to `crds/store.yaml` and the chart's `charts/letsgo/crds/store.yaml`
//! (paths from the repository root, or from the directory given as the only argument).
//! `--stdout` prints it instead.

use std::path::PathBuf;
use std::process::ExitCode;

use letsgo_operator::crd::{COMMITTED_PATHS, render};

fn main() -> ExitCode {
    let yaml = render();
    let arg = std::env::args().nth(1);
    if arg.as_deref() == Some("--stdout") {
        print!("{yaml}");
        return ExitCode::SUCCESS;
    }
    let root = arg.map(PathBuf::from).unwrap_or_else(|| {
        std::path::PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("..")
    });
    for path in COMMITTED_PATHS {
        let path = root.join(path);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, &yaml));
        if let Err(error) = written {
            eprintln!("crdgen: writing {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
