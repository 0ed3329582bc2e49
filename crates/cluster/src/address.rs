//! Addresses on the command line: one `host:port`, and the list of the
//! coordinator group's members (`-c h1:p1,h2:p2,h3:p3`) that every process
//! takes. One parser, so every binary accepts and refuses the same text.

/// Most addresses in one list (the largest coordinator group).
pub const ADDRESS_LIST_MAX: usize = 7;

/// Checks that `s` is `host:port` (port 1..=65535, no whitespace) and
/// returns it trimmed.
pub fn parse_host_port(s: &str) -> Result<String, String> {
    let s = s.trim();
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?} is not host:port"));
    };
    if host.is_empty() || s.chars().any(char::is_whitespace) {
        return Err(format!("{s:?} is not host:port"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(s.to_string()),
        _ => Err(format!("{s:?}: the port is not in 1..=65535")),
    }
}

/// Parses `host:port[,host:port...]`: at least one, at most
/// [`ADDRESS_LIST_MAX`], none twice.
pub fn parse_address_list(s: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for part in s.split(',') {
        let addr = parse_host_port(part)?;
        if out.contains(&addr) {
            return Err(format!("{addr} is named twice"));
        }
        out.push(addr);
    }
    if out.len() > ADDRESS_LIST_MAX {
        return Err(format!(
            "{} addresses; at most {ADDRESS_LIST_MAX}",
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_or_a_list() {
        assert_eq!(
            parse_host_port(" 127.0.0.1:9000 ").unwrap(),
            "127.0.0.1:9000"
        );
        assert_eq!(parse_host_port("[::1]:9000").unwrap(), "[::1]:9000");
        for bad in [
            "",
            "host",
            ":9000",
            "host:",
            "host:0",
            "host:70000",
            "ho st:1",
        ] {
            assert!(parse_host_port(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_address_list("a:1,b:2, c:3").unwrap(),
            vec!["a:1", "b:2", "c:3"]
        );
        assert_eq!(parse_address_list("a:1").unwrap(), vec!["a:1"]);
        assert!(parse_address_list("a:1,a:1").is_err());
        assert!(parse_address_list("a:1,").is_err());
        assert!(parse_address_list("a:1,b:2,c:3,d:4,e:5,f:6,g:7,h:8").is_err());
    }
}
