//! Two-phase commit recovery: `in-doubt` and `resolve`.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;

use super::open_existing;
use crate::Global;
use crate::output::Out;

/// Options of `sop resolve`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("decision").required(true).args(["commit", "abort"])))]
pub struct ResolveArgs {
    /// Transaction id, in hex as `sop in-doubt` prints it.
    pub txn: String,
    /// Apply the transaction's prepared changes.
    #[arg(long)]
    pub commit: bool,
    /// Discard the transaction's prepared changes.
    #[arg(long)]
    pub abort: bool,
}

/// Parses a transaction id: 1 to 32 hex digits, with or without `0x`.
pub fn parse_txn_id(s: &str) -> Result<u128> {
    let t = s.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    u128::from_str_radix(t, 16)
        .with_context(|| format!("{s:?} is not a transaction id (32 hex digits)"))
}

/// `sop in-doubt`.
pub fn in_doubt(g: &Global, out: Out) -> Result<ExitCode> {
    let db = open_existing(g)?;
    let list = db.in_doubt()?;
    if out.json {
        for d in &list {
            out.json_line(&json!({
                "txn": format!("{:032x}", d.txn_id),
                "stores": d.stores,
                "participants": d.participants,
            }))?;
        }
    } else if list.is_empty() {
        out.text("no in-doubt transactions")?;
    } else {
        out.table(
            &["transaction", "stores", "participants"],
            list.iter()
                .map(|d| {
                    vec![
                        format!("{:032x}", d.txn_id),
                        d.stores.join(", "),
                        d.participants.join(", "),
                    ]
                })
                .collect(),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `sop resolve`.
pub fn resolve(g: &Global, a: &ResolveArgs, out: Out) -> Result<ExitCode> {
    let id = parse_txn_id(&a.txn)?;
    let db = open_existing(g)?;
    let what = if a.commit { "committed" } else { "aborted" };
    db.resolve_in_doubt(id, a.commit)
        .with_context(|| format!("resolving transaction {id:032x}"))?;
    out.emit(
        &json!({ "txn": format!("{id:032x}"), "decision": what }),
        || format!("transaction {id:032x} {what}"),
    )?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_txn_id;

    #[test]
    fn txn_ids() {
        assert_eq!(parse_txn_id("0x1f").ok(), Some(0x1f));
        assert_eq!(
            parse_txn_id(&format!("{:032x}", u128::MAX)).ok(),
            Some(u128::MAX)
        );
        assert!(parse_txn_id("xyz").is_err());
    }
}
