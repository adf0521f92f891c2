//! Runs the built `sop` binary on temporary folders.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value as Json;

const SOP: &str = env!("CARGO_BIN_EXE_sop");

fn sop(db: &Path, args: &[&str]) -> Output {
    Command::new(SOP)
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and asserts success; returns stdout.
fn ok(db: &Path, args: &[&str]) -> String {
    let o = sop(db, args);
    assert!(
        o.status.success(),
        "sop {args:?} failed: {}\n{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs and asserts failure; returns stdout + stderr.
fn fails(db: &Path, args: &[&str]) -> String {
    let o = sop(db, args);
    assert!(
        !o.status.success(),
        "sop {args:?} should fail: {}",
        stdout(&o)
    );
    format!("{}{}", stdout(&o), stderr(&o))
}

fn json_lines(s: &str) -> Vec<Json> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn db_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("db")
}

#[test]
fn demo_runs_and_leaves_a_verifiable_database() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let out = Command::new(SOP)
        .arg("demo")
        .arg(&demo)
        .args(["--n", "5000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("wrote 5000 items"), "{text}");
    assert!(text.contains("0 problems"), "{text}");
    let stores = ok(&demo, &["stores"]);
    assert!(
        stores.contains("people") && stores.contains("4990"),
        "{stores}"
    );
    // Typed (String, u32) keys are decoded for display.
    let scan = ok(&demo, &["--json", "scan", "people", "--limit", "1"]);
    let rows = json_lines(&scan);
    assert_eq!(rows[0]["key"], serde_json::json!(["user0000010", 10]));
    assert_eq!(rows[0]["value"], "value of user 10");
    let v = ok(&demo, &["get", "people", r#"["user0000100",3]"#]);
    assert_eq!(v.trim(), "value of user 100");
    ok(&demo, &["verify"]);
}

#[test]
fn put_get_del_scan_export_import_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    ok(&db, &["init", "--segment-bytes", "1M", "--no-sync"]);
    // Options given to init persist across later commands.
    ok(&db, &["put", "s", "x", "y"]);
    ok(&db, &["del", "s", "x"]);
    let info = json_lines(&ok(&db, &["--json", "info"]));
    assert_eq!(info[0]["segment_bytes"], 1 << 20);
    assert_eq!(info[0]["sync"], false);
    for (k, v) in [("b", "2"), ("a", "1"), ("c", "3"), ("d", "four")] {
        ok(&db, &["put", "s", k, v]);
    }
    ok(&db, &["put", "s", "c", "three"]);
    assert_eq!(ok(&db, &["get", "s", "c"]).trim(), "three");
    ok(&db, &["del", "s", "b"]);
    let e = fails(&db, &["get", "s", "b"]);
    assert!(e.contains("not found"), "{e}");
    let e = fails(&db, &["del", "s", "b"]);
    assert!(e.contains("not found"), "{e}");

    let all = json_lines(&ok(&db, &["--json", "scan", "s"]));
    let keys: Vec<_> = all.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["a", "c", "d"]);
    let part = json_lines(&ok(
        &db,
        &[
            "--json",
            "scan",
            "s",
            "--from",
            "b",
            "--to",
            "d",
            "--reverse",
        ],
    ));
    assert_eq!(part.len(), 1);
    assert_eq!(part[0]["value"], "three");
    let lim = json_lines(&ok(
        &db,
        &["--json", "scan", "s", "--reverse", "--limit", "2"],
    ));
    let keys: Vec<_> = lim.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["d", "c"]);
    assert!(ok(&db, &["scan", "s"]).contains("three"));

    let file = dir.path().join("s.jsonl");
    ok(&db, &["export", "s", file.to_str().unwrap()]);
    let exported = std::fs::read_to_string(&file).unwrap();
    assert_eq!(json_lines(&exported), all);

    // Import into a new store, in several transactions, plus some extra lines.
    let mut text = exported.clone();
    for i in 0..25 {
        text.push_str(&format!("{{\"key\": \"k{i:02}\", \"value\": \"v{i}\"}}\n"));
    }
    std::fs::write(&file, text).unwrap();
    let r = json_lines(&ok(
        &db,
        &[
            "--json",
            "import",
            "t",
            file.to_str().unwrap(),
            "--batch",
            "10",
        ],
    ));
    assert_eq!(r[0]["imported"], 28);
    assert_eq!(r[0]["transactions"], 3);
    let t = json_lines(&ok(&db, &["--json", "scan", "t", "--limit", "0"]));
    assert_eq!(t.len(), 28);
    assert_eq!(&t[..3], &all[..]);
    let stores = json_lines(&ok(&db, &["--json", "stores"]));
    assert_eq!(stores.len(), 2);
    assert_eq!(stores[1]["count"], 28);

    // A bad line names the file and line.
    std::fs::write(&file, "{\"key\": \"x\", \"value\": \"y\"}\nnot json\n").unwrap();
    let e = fails(&db, &["import", "u", file.to_str().unwrap()]);
    assert!(e.contains("s.jsonl:2"), "{e}");

    ok(&db, &["checkpoint"]);
    assert!(ok(&db, &["in-doubt"]).contains("no in-doubt"));
    let v = json_lines(&ok(&db, &["--json", "verify"]));
    assert_eq!(v.last().unwrap()["ok"], true);
}

#[test]
fn raw_and_non_utf8_bytes_show_as_hex() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    ok(&db, &["put", "s", "k", "v"]);
    // Raw bytes through --raw --hex: a key that is not UTF-8.
    ok(&db, &["put", "s", "ff00", "6869", "--raw", "--hex"]);
    let rows = json_lines(&ok(&db, &["--json", "scan", "s", "--raw"]));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["key"], serde_json::json!({"hex": "ff00"}));
    let text = ok(&db, &["scan", "s", "--raw"]);
    assert!(text.contains("0xff00"), "{text}");
    let v = ok(&db, &["get", "s", "ff00", "--raw", "--hex"]);
    assert_eq!(v.trim(), "hi");
    // Export / import keep the bytes.
    let file = dir.path().join("raw.jsonl");
    ok(&db, &["export", "s", file.to_str().unwrap(), "--raw"]);
    ok(&db, &["import", "copy", file.to_str().unwrap(), "--raw"]);
    let copy = json_lines(&ok(&db, &["--json", "scan", "copy", "--raw"]));
    assert_eq!(copy, rows);
}

#[test]
fn verify_reports_a_corrupted_log_segment() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    for i in 0..20 {
        ok(&db, &["put", "s", &format!("key{i}"), &"x".repeat(50)]);
    }
    ok(&db, &["verify"]);
    let seg = std::fs::read_dir(db.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();
    let o = sop(&db, &["verify"]);
    assert!(!o.status.success());
    let msg = format!("{}{}", stdout(&o), stderr(&o));
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert!(msg.contains(name), "{msg}");
    assert!(msg.contains("offset"), "{msg}");
    let o = sop(&db, &["--json", "verify"]);
    assert!(!o.status.success());
    let lines = json_lines(&stdout(&o));
    assert!(lines.iter().any(|l| l["problem"].is_string()), "{lines:?}");
}

#[test]
fn clear_errors_for_missing_store_and_non_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    ok(&db, &["put", "s", "a", "1"]);
    for args in [
        &["get", "nope", "a"][..],
        &["scan", "nope"],
        &["info", "nope"],
        &["export", "nope", "-"],
    ] {
        let e = fails(&db, args);
        assert!(
            e.contains("nope") && e.contains("not found"),
            "{args:?}: {e}"
        );
    }
    let missing = dir.path().join("missing");
    let e = fails(&missing, &["stores"]);
    assert!(e.contains("does not exist"), "{e}");
    assert!(
        !missing.exists(),
        "a read command must not create a database"
    );
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "hello").unwrap();
    for args in [&["stores"][..], &["verify"], &["put", "s", "a", "1"]] {
        let e = fails(&other, args);
        assert!(e.contains("not a SOP database"), "{args:?}: {e}");
    }
    let e = fails(&db, &["init"]);
    assert!(e.contains("already"), "{e}");
    let e = fails(&dir.path().join("x"), &["init", "--segment-bytes", "1K"]);
    assert!(e.contains("segment_bytes"), "{e}");
    // --json errors are JSON too.
    let o = sop(&db, &["--json", "get", "nope", "a"]);
    assert!(!o.status.success());
    assert!(json_lines(&stdout(&o))[0]["error"].is_string());
}

#[test]
fn json_output_parses_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    ok(&db, &["--json", "init"]);
    ok(&db, &["--json", "put", "s", "a", "1"]);
    for args in [
        &["--json", "stores"][..],
        &["--json", "info"],
        &["--json", "info", "s"],
        &["--json", "get", "s", "a"],
        &["--json", "scan", "s"],
        &["--json", "verify"],
        &["--json", "checkpoint"],
        &["--json", "in-doubt"],
        &["--json", "del", "s", "a"],
    ] {
        let out = ok(&db, args);
        let lines = json_lines(&out);
        assert!(
            lines.iter().all(Json::is_object),
            "{args:?}: not objects: {out}"
        );
    }
    let demo = dir.path().join("demo");
    let out = Command::new(SOP)
        .args(["--json", "demo"])
        .arg(&demo)
        .args(["--n", "100"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(json_lines(&stdout(&out)).iter().all(Json::is_object));
}

#[test]
fn help_everywhere() {
    for cmd in [
        "demo",
        "init",
        "stores",
        "info",
        "get",
        "put",
        "del",
        "scan",
        "import",
        "export",
        "verify",
        "checkpoint",
        "in-doubt",
        "resolve",
        "bench",
    ] {
        let o = Command::new(SOP).args([cmd, "--help"]).output().unwrap();
        assert!(o.status.success(), "{cmd} --help");
        assert!(stdout(&o).contains("Usage"), "{cmd}");
    }
}

#[test]
fn bench_forwards_to_sop_bench() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(SOP)
        .args([
            "bench",
            "--workload",
            "W1",
            "--n",
            "200",
            "--engines",
            "sop",
        ])
        .args(["--no-sync", "--json", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = json_lines(&stdout(&o));
    assert!(!rows.is_empty());
    assert!(
        rows.iter()
            .all(|r| r["engine"] == "sop" && r["workload"] == "W1")
    );
    // Repeated runs: one row per operation, the best of the runs.
    let o = Command::new(SOP)
        .args([
            "bench",
            "--workload",
            "W1",
            "--n",
            "200",
            "--engines",
            "sop",
        ])
        .args(["--repeat", "3", "--no-sync", "--json", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = json_lines(&stdout(&o));
    let mut ops: Vec<&str> = rows.iter().filter_map(|r| r["op"].as_str()).collect();
    ops.sort_unstable();
    assert_eq!(ops, ["delete", "insert", "read"]);
    assert!(rows.iter().all(|r| r["ops_per_sec"].as_f64() > Some(0.0)));
    let zero = Command::new(SOP)
        .args(["bench", "--repeat", "0"])
        .output()
        .unwrap();
    assert!(!zero.status.success());
    let e = Command::new(SOP)
        .args(["bench", "--engines", "nosuch"])
        .output()
        .unwrap();
    assert!(!e.status.success());
}

/// Child half of `in_doubt_and_resolve`: prepares a transaction and exits without deciding.
#[test]
fn in_doubt_child_helper() {
    let Ok(dir) = std::env::var("SOP_CLI_TEST_PREPARE") else {
        return;
    };
    let db = sop::Database::open(sop::DatabaseOptions::new(&dir)).unwrap();
    let tx = db.begin(sop::TransactionMode::ForWriting).unwrap();
    let s = tx
        .new_btree::<String, String>("s", sop::StoreOptions::default())
        .unwrap();
    s.upsert(&"prepared".into(), &"yes".into()).unwrap();
    tx.phase1_commit().unwrap();
    // Stop before phase 2: the decision is lost.
    std::process::exit(0);
}

#[test]
fn in_doubt_and_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    ok(&db, &["put", "s", "a", "1"]);
    for decision in ["--abort", "--commit"] {
        let st = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "in_doubt_child_helper", "--nocapture"])
            .env("SOP_CLI_TEST_PREPARE", &db)
            .output()
            .unwrap();
        assert!(st.status.success(), "{}", stderr(&st));
        let listed = json_lines(&ok(&db, &["--json", "in-doubt"]));
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["stores"], serde_json::json!(["s"]));
        let id = listed[0]["txn"].as_str().unwrap().to_owned();
        assert!(ok(&db, &["in-doubt"]).contains(&id));
        ok(&db, &["resolve", &id, decision]);
        assert!(json_lines(&ok(&db, &["--json", "in-doubt"])).is_empty());
        let got = sop(&db, &["get", "s", "prepared"]);
        assert_eq!(got.status.success(), decision == "--commit");
    }
    let e = fails(&db, &["resolve", "00ff", "--commit"]);
    assert!(e.contains("no in-doubt transaction"), "{e}");
}

/// `--redis` works on a folder other processes have open in clustered mode (here: a handle of
/// this test process); without it the folder is refused as locked.
#[test]
fn redis_option_works_on_a_running_cluster() {
    let redis = sop_redis::testing::RedisServer::start();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let with_redis = |args: &[&str]| {
        let mut a = vec!["--redis", url.as_str()];
        a.extend_from_slice(args);
        ok(&db, &a)
    };
    with_redis(&["put", "s", "k1", "v1"]);
    // A long-running clustered process holds the folder.
    let running = sop_redis::open(
        sop::DatabaseOptions::new(&db),
        sop::ClusterOptions::default(),
        &sop_redis::RedisOptions::from_url(&url),
    )
    .unwrap();
    let e = fails(&db, &["get", "s", "k1"]);
    assert!(e.contains("locked"), "{e}");
    assert_eq!(with_redis(&["get", "s", "k1"]).trim(), "v1");
    with_redis(&["put", "s", "k2", "v2"]);
    let rows = json_lines(&with_redis(&["--json", "scan", "s"]));
    assert_eq!(rows.len(), 2);
    assert!(with_redis(&["verify"]).to_lowercase().contains("ok"));
    // The running process sees the CLI's commits.
    let tx = running.begin(sop::TransactionMode::ForReading).unwrap();
    let s = tx.open_raw_btree("s").unwrap();
    assert_eq!(s.count().unwrap(), 2);
    drop((s, tx, running));
    // Alone again: plain standalone commands work.
    assert_eq!(ok(&db, &["get", "s", "k2"]).trim(), "v2");
}
