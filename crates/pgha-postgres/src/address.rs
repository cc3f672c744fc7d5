//! Addresses as Patroni writes them: `host:port`, `[v6]:port`, and for
//! `postgresql.listen` a comma-separated host list before the port.

use std::fmt;

/// Why an address cannot be used; each names the text given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("{0:?} is not host:port")]
    NoPort(String),
    #[error("{0:?} is not host[,host...]:port")]
    NoListenPort(String),
    #[error("{text:?}: port {port:?} is not a number from 1 to 65535")]
    BadPort { text: String, port: String },
    #[error("{0:?}: port 0 is not allowed")]
    PortZero(String),
    #[error("{0:?} is not an address others can connect to")]
    NotConnectable(String),
}

/// The port of `text`, from 1 to 65535.
fn port(text: &str, port: &str) -> Result<u16, AddressError> {
    match port.parse::<u16>() {
        Ok(0) => Err(AddressError::PortZero(text.into())),
        Ok(p) => Ok(p),
        Err(_) => Err(AddressError::BadPort {
            text: text.into(),
            port: port.into(),
        }),
    }
}

/// A host (name or address) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// An address to connect to: the host is required.
    pub fn parse_connect(s: &str) -> Result<Self, AddressError> {
        let hp = Self::split(s)?;
        if hp.host.is_empty() || hp.host == "*" || hp.host == "0.0.0.0" || hp.host == "::" {
            return Err(AddressError::NotConnectable(s.into()));
        }
        Ok(hp)
    }

    /// An address to listen on: an empty host or `*` means all interfaces.
    pub fn parse_listen(s: &str) -> Result<Self, AddressError> {
        let mut hp = Self::split(s)?;
        if hp.host.is_empty() || hp.host == "*" {
            hp.host = "0.0.0.0".into();
        }
        Ok(hp)
    }

    fn split(s: &str) -> Result<Self, AddressError> {
        let s = s.trim();
        let (host, port_text) = s
            .rsplit_once(':')
            .ok_or_else(|| AddressError::NoPort(s.into()))?;
        let port = port(s, port_text)?;
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
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let s = s.trim();
        let (hosts, port_text) = s
            .rsplit_once(':')
            .ok_or_else(|| AddressError::NoListenPort(s.into()))?;
        let port = port(s, port_text)?;
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
        assert_eq!(
            HostPort::parse_connect("0.0.0.0:8008"),
            Err(AddressError::NotConnectable("0.0.0.0:8008".into()))
        );
        assert_eq!(
            HostPort::parse_connect("h:0"),
            Err(AddressError::PortZero("h:0".into()))
        );
        assert_eq!(
            HostPort::parse_connect("h:http").unwrap_err().to_string(),
            r#""h:http": port "http" is not a number from 1 to 65535"#
        );
        assert_eq!(
            HostPort::parse_connect("justahost"),
            Err(AddressError::NoPort("justahost".into()))
        );
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
