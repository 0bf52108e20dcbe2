//! Writes reports for the test suite's synthetic sweeps, to look at by eye:
//! `cargo run -p report --example synthetic_report -- OUT_DIR` writes
//! OUT_DIR/{finished,protocol,across,mixed,none,loss,top5}.

#[path = "../tests/common/mod.rs"]
mod common;

fn main() -> Result<(), report::ReportError> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "synthetic-report".to_string());
    let out = std::path::Path::new(&out);
    report::write_report(&common::finished_sweep(5, 100), &out.join("finished"))?;
    report::write_report(&common::protocol_sweep(100), &out.join("protocol"))?;
    report::write_report(&common::protocol_sweep_across_machines(100), &out.join("across"))?;
    report::write_report(&common::partial_sweep_mixed(), &out.join("mixed"))?;
    report::write_report(&common::partial_sweep_none_finished(), &out.join("none"))?;
    report::write_report(&common::ranked_by_loss(), &out.join("loss"))?;
    report::write_report(&common::ranked_by_top5(), &out.join("top5"))?;
    println!("wrote {}", out.display());
    Ok(())
}
