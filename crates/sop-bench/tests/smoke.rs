//! Every workload runs on every built-in engine at a small N and reports sensible rows.

use anyhow::Result;
use sop_bench::workloads::{SINGLE_COMMITS, baseline};
use sop_bench::{EngineConfig, Workload, engines};

#[test]
fn all_workloads_on_built_in_engines() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = EngineConfig {
        sync: false,
        slot_length: Some(8),
    };
    for engine in engines::BUILT {
        for w in Workload::ALL {
            let path = dir.path().join(format!("{w}-{engine}"));
            let rows = w.run(engine, &path, &cfg, 500, 7)?;
            assert!(!rows.is_empty(), "{w} on {engine} reported nothing");
            for r in &rows {
                assert_eq!(r.engine, *engine);
                assert_eq!(r.workload, w.name());
                assert!(r.n > 0 && r.seconds >= 0.0 && r.ops_per_sec > 0.0, "{r:?}");
                let json = r.to_json();
                assert_eq!(json["op"], r.op.as_str());
            }
            if matches!(w, Workload::W2 | Workload::W7) {
                assert!(rows.iter().all(|r| r.bytes_on_disk.is_some_and(|b| b > 0)));
            }
            let ops: Vec<&str> = rows.iter().map(|r| r.op.as_str()).collect();
            match w {
                Workload::W4c => {
                    assert_eq!(ops, ["single_insert_commit_8t"], "{engine}");
                    assert_eq!(rows[0].n, SINGLE_COMMITS as u64);
                }
                Workload::W5 => {
                    assert_eq!(ops, ["random_get", "random_get_2t"], "{engine}");
                    assert!(rows.iter().all(|r| r.n == 500));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[test]
fn parses_workload_lists_and_rejects_unknown_engines() -> Result<()> {
    assert_eq!(Workload::parse_list("all")?.len(), 8);
    assert_eq!(
        Workload::parse_list("W4,w4c,W5")?,
        vec![Workload::W4, Workload::W4c, Workload::W5]
    );
    assert_eq!(
        baseline("W4c", "single_insert_commit_8t"),
        Some(("W4", "single_insert_commit", "W4c/W4"))
    );
    assert_eq!(baseline("W5", "random_get"), None);
    assert_eq!(
        Workload::parse_list("w3, W1,W3")?,
        vec![Workload::W1, Workload::W3]
    );
    assert!(Workload::parse_list("W9").is_err());
    assert!(engines::check("sop").is_ok());
    assert!(engines::check("nope").is_err());
    Ok(())
}
