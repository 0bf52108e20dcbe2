//! Flag values that are `auto` or a whole count of at least one (`--fuse`, `--slots-per-gpu`):
//! one reading and one spelling for both.

use std::fmt;

/// `s` as `auto` (`None`) or a whole count of at least one (`Some`). The errors name `flag`,
/// what it counts (`unit`) and why 0 is refused (`zero`).
pub fn parse(s: &str, flag: &str, unit: &str, zero: &str) -> Result<Option<u32>, String> {
    if s == "auto" {
        return Ok(None);
    }
    match s.parse::<u32>() {
        Ok(0) => Err(format!("{flag} 0: {zero}")),
        Ok(n) => Ok(Some(n)),
        Err(_) => Err(format!("{flag} {s:?}: expected auto or a number of {unit} (1, 2, …)")),
    }
}

/// `count` as [`parse`] reads it back: `auto` or the number.
pub fn write(count: Option<u32>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match count {
        None => f.write_str("auto"),
        Some(n) => write!(f, "{n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_and_positive_counts_read_and_anything_else_names_the_flag() {
        assert_eq!(parse("auto", "--n", "slots", "none"), Ok(None));
        assert_eq!(parse("12", "--n", "slots", "none"), Ok(Some(12)));
        assert_eq!(parse("0", "--n", "slots", "at least one"), Err("--n 0: at least one".to_owned()));
        for bad in ["", "-1", "2.5", "Auto"] {
            let err = parse(bad, "--n", "slots", "none").unwrap_err();
            assert!(err.starts_with("--n ") && err.contains("a number of slots"), "{err}");
        }
    }
}
