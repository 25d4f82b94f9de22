//! Network grants: the TCP addresses (`network = [...]`) and HTTP origins
//! (`http = [...]`) a probe may reach, and the checks that enforce them.
//!
//! A probe without a grant gets no sockets at all: TCP, UDP and name lookups are
//! switched off in its WASI context, and every outgoing HTTP request is denied.
//! With grants, a TCP connect is allowed only to an address a grant names or
//! resolves to (host names are resolved by the host at check time, so a
//! Kubernetes service that moves keeps working), and an HTTP request only to a
//! granted origin (scheme, host and port). UDP, listening and accepting are
//! never allowed.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use tokio::sync::OnceCell;
use wasmtime_wasi::sockets::SocketAddrUse;

/// The host part of a network grant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GrantHost {
    Ip(IpAddr),
    /// A DNS name, lower-case.
    Name(String),
}

impl fmt::Display for GrantHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            GrantHost::Ip(ip) => write!(f, "{ip}"),
            GrantHost::Name(name) => f.write_str(name),
        }
    }
}

/// Parse a host: an IPv4 address, an IPv6 address in brackets, or a DNS name.
fn parse_host(host: &str) -> Result<GrantHost, String> {
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner
            .parse::<std::net::Ipv6Addr>()
            .map(|ip| GrantHost::Ip(IpAddr::V6(ip)))
            .map_err(|_| format!("{inner:?} is not an IPv6 address"));
    }
    if host.contains(':') {
        return Err("write an IPv6 address in brackets, e.g. [::1]:6379".into());
    }
    match url::Host::parse(host) {
        Ok(url::Host::Ipv4(ip)) => Ok(GrantHost::Ip(IpAddr::V4(ip))),
        Ok(url::Host::Ipv6(ip)) => Ok(GrantHost::Ip(IpAddr::V6(ip))),
        Ok(url::Host::Domain(name)) if !name.contains(['/', '*', '?', '#', '@']) => {
            Ok(GrantHost::Name(name.to_ascii_lowercase()))
        }
        _ => Err(format!("{host:?} is not a host name or IP address")),
    }
}

/// One `network = [...]` entry: `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetworkGrant {
    pub host: GrantHost,
    pub port: u16,
}

impl FromStr for NetworkGrant {
    type Err = String;

    fn from_str(s: &str) -> Result<NetworkGrant, String> {
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!(
                "{s:?} has no port: write HOST:PORT, e.g. \"127.0.0.1:6379\""
            ));
        };
        let port = match port.parse::<u16>() {
            Ok(0) | Err(_) => {
                return Err(format!("{port:?} is not a port number (1-65535)"));
            }
            Ok(p) => p,
        };
        // `::1:6379` splits at its last colon into an unbracketed IPv6 host.
        let host = parse_host(host)?;
        Ok(NetworkGrant { host, port })
    }
}

impl fmt::Display for NetworkGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// One `http = [...]` entry: an origin, `scheme://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpOrigin {
    pub https: bool,
    pub host: GrantHost,
    pub port: u16,
}

impl HttpOrigin {
    fn default_port(https: bool) -> u16 {
        if https { 443 } else { 80 }
    }

    /// Whether a request to `uri` goes to this origin.
    pub fn matches(&self, uri: &http::Uri) -> bool {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return false,
        };
        let Some(authority) = uri.authority() else {
            return false;
        };
        // The connection goes to the whole authority: one with user info
        // (`user@host`) is not the host it names.
        if authority.as_str().contains('@') {
            return false;
        }
        let Ok(host) = parse_host(authority.host()) else {
            return false;
        };
        let port = authority
            .port_u16()
            .unwrap_or(HttpOrigin::default_port(https));
        https == self.https && host == self.host && port == self.port
    }
}

impl FromStr for HttpOrigin {
    type Err = String;

    fn from_str(s: &str) -> Result<HttpOrigin, String> {
        let url = url::Url::parse(s).map_err(|e| {
            format!("{s:?} is not an origin ({e}): write e.g. \"http://127.0.0.1:8080\"")
        })?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            other => {
                return Err(format!(
                    "{s:?}: the scheme must be http or https, not {other:?}"
                ));
            }
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("{s:?}: an origin has no user name or password"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "{s:?}: an origin has no path, query or fragment; the grant covers every path of it"
            ));
        }
        let host = match url.host() {
            Some(url::Host::Ipv4(ip)) => GrantHost::Ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => GrantHost::Ip(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => GrantHost::Name(name.to_ascii_lowercase()),
            None => return Err(format!("{s:?} has no host")),
        };
        let port = url.port().unwrap_or(HttpOrigin::default_port(https));
        Ok(HttpOrigin { https, host, port })
    }
}

impl fmt::Display for HttpOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.host)?;
        if self.port != HttpOrigin::default_port(self.https) {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// Decides, during one check, which socket addresses a probe may use. Granted
/// names are resolved once per check, on the first connect.
#[derive(Debug)]
pub(crate) struct SocketPolicy {
    grants: Arc<[NetworkGrant]>,
    resolved: OnceCell<Vec<SocketAddr>>,
}

impl SocketPolicy {
    pub(crate) fn new(grants: Arc<[NetworkGrant]>) -> SocketPolicy {
        SocketPolicy {
            grants,
            resolved: OnceCell::new(),
        }
    }

    pub(crate) async fn allows(&self, addr: SocketAddr, usage: SocketAddrUse) -> bool {
        match usage {
            // Every connect first binds the socket implicitly to the wildcard
            // address; only that bind is allowed.
            SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
            SocketAddrUse::TcpConnect => {
                let addr = canonical(addr);
                if self.resolved().await.contains(&addr) {
                    return true;
                }
                // The probe resolved a granted name itself and may have got
                // other addresses (round-robin DNS, a service that moved):
                // look the names granted on that port up once more.
                let again = self.grants.iter().filter(|g| g.port == addr.port());
                resolve(again).await.contains(&addr)
            }
            _ => false,
        }
    }

    async fn resolved(&self) -> &[SocketAddr] {
        self.resolved
            .get_or_init(|| resolve(self.grants.iter()))
            .await
    }
}

/// IPv4 addresses as IPv4, also when written as IPv6-mapped.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The addresses `grants` name or resolve to now.
async fn resolve(grants: impl Iterator<Item = &NetworkGrant>) -> Vec<SocketAddr> {
    let mut addrs = Vec::new();
    for grant in grants {
        match &grant.host {
            GrantHost::Ip(ip) => addrs.push(canonical(SocketAddr::new(*ip, grant.port))),
            GrantHost::Name(name) => {
                match tokio::net::lookup_host((name.as_str(), grant.port)).await {
                    Ok(found) => addrs.extend(found.map(canonical)),
                    Err(e) => tracing::debug!(grant = %grant, "cannot resolve granted host: {e}"),
                }
            }
        }
    }
    addrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_grants_parse_addresses_and_names() {
        let g: NetworkGrant = "127.0.0.1:6379".parse().unwrap();
        assert_eq!(g.host, GrantHost::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(g.port, 6379);
        let g: NetworkGrant = "[::1]:6379".parse().unwrap();
        assert_eq!(g.to_string(), "[::1]:6379");
        let g: NetworkGrant = "Redis.Default.svc:6379".parse().unwrap();
        assert_eq!(g.host, GrantHost::Name("redis.default.svc".into()));
    }

    #[test]
    fn network_grants_reject_what_is_not_host_and_port() {
        for (bad, said) in [
            ("127.0.0.1", "has no port"),
            ("127.0.0.1:0", "not a port number"),
            ("127.0.0.1:http", "not a port number"),
            ("::1:6379", "in brackets"),
            (":6379", "host is empty"),
            ("[zz]:1", "not an IPv6 address"),
            ("redis/x:6379", "not a host name"),
        ] {
            let e = bad.parse::<NetworkGrant>().unwrap_err();
            assert!(e.contains(said), "{bad}: {e}");
        }
    }

    #[test]
    fn origins_parse_and_match_by_scheme_host_and_port() {
        let o: HttpOrigin = "http://127.0.0.1:8080".parse().unwrap();
        assert!(o.matches(&"http://127.0.0.1:8080/health?x=1".parse().unwrap()));
        assert!(!o.matches(&"https://127.0.0.1:8080/".parse().unwrap()));
        assert!(!o.matches(&"http://127.0.0.1:8081/".parse().unwrap()));
        assert!(!o.matches(&"http://localhost:8080/".parse().unwrap()));
        let o: HttpOrigin = "https://API.example.com".parse().unwrap();
        assert_eq!(o.to_string(), "https://api.example.com");
        assert!(o.matches(&"https://api.example.com:443/v1".parse().unwrap()));
        assert!(!o.matches(&"http://api.example.com/".parse().unwrap()));
        let o: HttpOrigin = "http://[::1]:9000/".parse().unwrap();
        assert!(o.matches(&"http://[::1]:9000/x".parse().unwrap()));
        let o: HttpOrigin = "http://127.0.0.1:8080".parse().unwrap();
        assert!(
            !o.matches(&"http://evil@127.0.0.1:8080/".parse().unwrap()),
            "user info in the authority"
        );
    }

    #[test]
    fn origins_reject_paths_credentials_and_other_schemes() {
        for (bad, said) in [
            ("ftp://example.com", "scheme must be http or https"),
            ("http://example.com/health", "no path"),
            ("http://u:p@example.com", "no user name"),
            ("example.com:80", "scheme must be"),
            ("not a url", "is not an origin"),
        ] {
            let e = bad.parse::<HttpOrigin>().unwrap_err();
            assert!(e.contains(said), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn sockets_reach_only_granted_addresses() {
        let policy = SocketPolicy::new(
            vec![
                "127.0.0.1:6379".parse().unwrap(),
                "localhost:7000".parse().unwrap(),
            ]
            .into(),
        );
        let allows = |a: &str, u| policy.allows(a.parse().unwrap(), u);
        assert!(allows("0.0.0.0:0", SocketAddrUse::TcpBind).await);
        assert!(!allows("127.0.0.1:5000", SocketAddrUse::TcpBind).await);
        assert!(allows("127.0.0.1:6379", SocketAddrUse::TcpConnect).await);
        assert!(allows("127.0.0.1:7000", SocketAddrUse::TcpConnect).await);
        assert!(!allows("127.0.0.1:6380", SocketAddrUse::TcpConnect).await);
        assert!(!allows("127.0.0.2:6379", SocketAddrUse::TcpConnect).await);
        assert!(!allows("127.0.0.1:6379", SocketAddrUse::UdpSend).await);
        assert!(!allows("0.0.0.0:0", SocketAddrUse::TcpListen).await);
        assert!(!allows("127.0.0.1:6379", SocketAddrUse::UdpBind).await);
        assert!(
            allows("[::ffff:127.0.0.1]:6379", SocketAddrUse::TcpConnect).await,
            "an IPv6-mapped IPv4 address is that address"
        );
    }

    #[tokio::test]
    async fn mapped_grants_match_plain_addresses() {
        let policy = SocketPolicy::new(vec!["[::ffff:127.0.0.1]:6379".parse().unwrap()].into());
        assert!(
            policy
                .allows("127.0.0.1:6379".parse().unwrap(), SocketAddrUse::TcpConnect)
                .await
        );
    }
}
