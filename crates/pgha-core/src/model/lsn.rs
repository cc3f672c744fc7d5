//! WAL positions (LSNs) in PostgreSQL's text form, `0/3000060`.

/// `0/3000060` → bytes; `None` for anything else.
pub fn parse(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Bytes → `0/3000060`.
pub fn format(v: u64) -> String {
    format!("{:X}/{:X}", v >> 32, v & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_round_trip() {
        assert_eq!(parse("0/3000060"), Some(0x3000060));
        assert_eq!(parse("1/0"), Some(1 << 32));
        assert_eq!(format(0x1_0300_0060), "1/3000060");
        assert_eq!(parse("nope"), None);
    }
}
