//! A task's own callback receiver (`callback_url` on the creates; README,
//! "Callbacks"): accepted only on a host the operator listed in
//! `CALLBACK_URL_ALLOWED_HOSTS`, and only when every address the host
//! resolves to passes the outbound policy every fetch obeys
//! (`modelgen_outbound::OutboundPolicy`: no loopback, private, link-local or
//! other internal address unless `OUTBOUND_ALLOWLIST` names it;
//! docs/outbound.md).
//!
//! The check runs when the task is created. The delivery resolves the host
//! again without pinning the address checked here; the allow-list of hosts,
//! which the operator controls, is what bounds a later change of its DNS.

use std::net::SocketAddr;
use std::time::Duration;

use modelgen_outbound::OutboundPolicy;

/// Longest accepted `callback_url`, characters: any real receiver's URL fits,
/// and the column stays a bounded `VARCHAR` on MySQL.
pub const MAX_CALLBACK_URL_CHARS: usize = 2048;

/// Longest a create waits for the host's DNS answer: the create answers
/// 1001 rather than hanging on a resolver that does not answer.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// At most this many characters of a host are echoed in a message.
const MAX_ECHOED_HOST_CHARS: usize = 64;

/// Which per-task callback URLs are accepted.
#[derive(Debug, Clone, Default)]
pub struct CallbackUrlPolicy {
    /// `CALLBACK_URL_ALLOWED_HOSTS`, lower-case; empty refuses every URL.
    hosts: Vec<String>,
    /// The outbound policy of every fetch (`OUTBOUND_ALLOWLIST` exceptions).
    outbound: OutboundPolicy,
}

impl CallbackUrlPolicy {
    /// A policy accepting `hosts` (compared case-insensitively; a trailing
    /// dot is ignored) whose addresses `outbound` allows.
    pub fn new(hosts: Vec<String>, outbound: OutboundPolicy) -> CallbackUrlPolicy {
        let hosts = hosts
            .into_iter()
            .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        CallbackUrlPolicy { hosts, outbound }
    }

    /// Checks `raw` and returns it normalised (as `url::Url` writes it).
    ///
    /// # Errors
    /// Why it is refused, for a 400/1001 on `callback_url`: per-task URLs
    /// turned off, too long, not an absolute http(s) URL, user info in it, a
    /// host not on the list, a host that does not resolve, or an address the
    /// outbound policy refuses.
    pub async fn check(&self, raw: &str) -> Result<String, String> {
        if self.hosts.is_empty() {
            return Err("is not accepted: per-task callback URLs are turned off \
                 (CALLBACK_URL_ALLOWED_HOSTS is empty); leave it out to use CALLBACK_URL"
                .into());
        }
        let raw = raw.trim();
        if raw.chars().count() > MAX_CALLBACK_URL_CHARS {
            return Err(format!(
                "must be at most {MAX_CALLBACK_URL_CHARS} characters"
            ));
        }
        let url = url::Url::parse(raw)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or("must be an absolute http:// or https:// URL")?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry user info (user:password@)".into());
        }
        let port = url
            .port_or_known_default()
            .ok_or("must be an absolute http:// or https:// URL")?;
        let (host, addrs): (String, Vec<SocketAddr>) = match url.host() {
            Some(url::Host::Ipv4(ip)) => (ip.to_string(), vec![SocketAddr::from((ip, port))]),
            Some(url::Host::Ipv6(ip)) => (ip.to_string(), vec![SocketAddr::from((ip, port))]),
            Some(url::Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if !self.hosts.contains(&name) {
                    return Err(not_listed(&name));
                }
                let resolved = tokio::time::timeout(
                    RESOLVE_TIMEOUT,
                    tokio::net::lookup_host((name.clone(), port)),
                )
                .await;
                let addrs: Vec<SocketAddr> = match resolved {
                    Ok(Ok(addrs)) => addrs.collect(),
                    _ => return Err(format!("host {} does not resolve", shown(&name))),
                };
                (name, addrs)
            }
            None => return Err("must be an absolute http:// or https:// URL".into()),
        };
        if !self.hosts.contains(&host) {
            return Err(not_listed(&host));
        }
        if addrs.is_empty() {
            return Err(format!("host {} does not resolve", shown(&host)));
        }
        let (_, refused) = self.outbound.filter(addrs);
        if let Some(refused) = refused {
            return Err(format!("is refused: {refused}"));
        }
        Ok(url.to_string())
    }
}

fn shown(host: &str) -> String {
    host.chars().take(MAX_ECHOED_HOST_CHARS).collect()
}

fn not_listed(host: &str) -> String {
    format!(
        "host {} is not one of CALLBACK_URL_ALLOWED_HOSTS",
        shown(host)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str], allow: &str) -> CallbackUrlPolicy {
        CallbackUrlPolicy::new(
            hosts.iter().map(|h| (*h).to_owned()).collect(),
            OutboundPolicy::new(modelgen_outbound::Allowlist::parse(allow).expect("allowlist")),
        )
    }

    #[tokio::test]
    async fn an_empty_list_refuses_every_url() {
        let err = policy(&[], "").check("https://93.184.215.14/cb").await;
        assert!(
            err.expect_err("refused")
                .contains("CALLBACK_URL_ALLOWED_HOSTS is empty")
        );
    }

    #[tokio::test]
    async fn only_listed_hosts_on_allowed_addresses_pass() {
        let p = policy(&["127.0.0.1", "Java.Example.COM"], "");
        // Listed, but loopback is internal and OUTBOUND_ALLOWLIST is empty.
        let err = p
            .check("http://127.0.0.1:9000/cb")
            .await
            .expect_err("loopback");
        assert!(
            err.contains("loopback") || err.contains("127.0.0.1"),
            "{err}"
        );
        let err = p.check("http://10.0.0.1/cb").await.expect_err("not listed");
        assert!(err.contains("not one of"), "{err}");
        let allowed = policy(&["127.0.0.1"], "127.0.0.1");
        assert_eq!(
            allowed
                .check(" http://127.0.0.1:9000/cb?x=1 ")
                .await
                .expect("allowed"),
            "http://127.0.0.1:9000/cb?x=1"
        );
        for bad in [
            "ftp://127.0.0.1/cb",
            "/cb",
            "http://u:p@127.0.0.1/cb",
            "not a url",
        ] {
            assert!(allowed.check(bad).await.is_err(), "{bad}");
        }
        let long = format!("http://127.0.0.1/{}", "a".repeat(MAX_CALLBACK_URL_CHARS));
        assert!(allowed.check(&long).await.is_err());
    }
}
