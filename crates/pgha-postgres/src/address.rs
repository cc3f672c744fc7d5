//! Addresses as Patroni writes them: `host:port`, `[v6]:port`, and for
//! `postgresql.listen` a comma-separated host list before the port.

use std::fmt;

/// A host (name or address) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// An address to connect to: the host is required.
    pub fn parse_connect(s: &str) -> Result<Self, String> {
        let hp = Self::split(s)?;
        if hp.host.is_empty() || hp.host == "*" || hp.host == "0.0.0.0" || hp.host == "::" {
            return Err(format!("{s:?} is not an address others can connect to"));
        }
        Ok(hp)
    }

    /// An address to listen on: an empty host or `*` means all interfaces.
    pub fn parse_listen(s: &str) -> Result<Self, String> {
        let mut hp = Self::split(s)?;
        if hp.host.is_empty() || hp.host == "*" {
            hp.host = "0.0.0.0".into();
        }
        Ok(hp)
    }

    fn split(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not host:port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?}: port {port:?} is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(format!("{s:?}: port 0 is not allowed"));
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(HostPort { host, port })
    }

    /// For binding a socket.
    pub fn socket_string(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.socket_string())
    }
}

/// `postgresql.listen`: PostgreSQL's `listen_addresses` and `port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgListen {
    /// As PostgreSQL's `listen_addresses` takes it: `127.0.0.1,10.0.0.1` or `*`.
    pub addresses: String,
    pub port: u16,
}

impl PgListen {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (hosts, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not host[,host...]:port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?}: port {port:?} is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(format!("{s:?}: port 0 is not allowed"));
        }
        let hosts: Vec<&str> = hosts
            .split(',')
            .map(|h| h.trim().trim_start_matches('[').trim_end_matches(']'))
            .filter(|h| !h.is_empty())
            .collect();
        let addresses = if hosts.is_empty() {
            "*".to_string()
        } else {
            hosts.join(",")
        };
        Ok(PgListen { addresses, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            HostPort::parse_connect("127.0.0.1:8008").unwrap(),
            HostPort {
                host: "127.0.0.1".into(),
                port: 8008
            }
        );
        assert_eq!(HostPort::parse_connect("[::1]:5432").unwrap().host, "::1");
        assert_eq!(
            HostPort::parse_connect("[::1]:5432").unwrap().to_string(),
            "[::1]:5432"
        );
        assert_eq!(HostPort::parse_listen(":8008").unwrap().host, "0.0.0.0");
        assert_eq!(HostPort::parse_listen("*:8008").unwrap().host, "0.0.0.0");
        assert!(HostPort::parse_connect("0.0.0.0:8008").is_err());
        assert!(HostPort::parse_connect("h:0").is_err());
        assert!(
            HostPort::parse_connect("h:http")
                .unwrap_err()
                .contains("http")
        );
        assert!(HostPort::parse_connect("justahost").is_err());
    }

    #[test]
    fn postgres_listen_forms() {
        assert_eq!(
            PgListen::parse("127.0.0.1,10.0.0.1:5433").unwrap(),
            PgListen {
                addresses: "127.0.0.1,10.0.0.1".into(),
                port: 5433
            }
        );
        assert_eq!(PgListen::parse("*:5432").unwrap().addresses, "*");
        assert_eq!(PgListen::parse(":5432").unwrap().addresses, "*");
        assert!(PgListen::parse("localhost").is_err());
    }
}
