//! The earlier Python service's configuration, variable by variable
//! (docs/legacy.md, "Configuration"): its whole `.env` starts modelgen
//! unchanged. Each variable either keeps its meaning (it is one of
//! modelgen's own settings, [`crate::config::ENV_KEYS`]) or is accepted and
//! ignored, with the reason `modelgen config check` and the startup log give.
//!
//! Names are matched in any ASCII case, as the earlier service matched them.

use crate::config::Config;

/// What modelgen does with one of the earlier service's variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// A modelgen setting of the same name and meaning.
    Kept,
    /// Accepted and ignored, for this reason.
    Ignored(&'static str),
}

/// Every variable of the earlier service's settings module, in its order,
/// with what modelgen does with it. `TASK_TIMEOUT` comes from its earlier
/// version (its latest dropped it).
pub const LEGACY_VARIABLES: &[(&str, Fate)] = &[
    ("DATABASE_URL", Fate::Kept),
    (
        "DATABASE_ECHO",
        Fate::Ignored(
            "modelgen does not print SQL statements; use the database server's statement log \
             (MySQL/MariaDB general_log, PostgreSQL log_statement)",
        ),
    ),
    ("APIMART_API_KEY", Fate::Kept),
    ("APIMART_BASE_URL", Fate::Kept),
    ("APIMART_MODEL", Fate::Kept),
    ("TASK_POLL_INTERVAL", Fate::Kept),
    ("TASK_TIMEOUT", Fate::Kept),
    (
        "APIMART_TASK_RETENTION_DAYS",
        Fate::Ignored(
            "not needed: a task still unfinished after TASK_TIMEOUT fails with `timeout`, long \
             before Apimart forgets it, so no task is ever resumed past Apimart's retention",
        ),
    ),
    (
        "RESUME_POLLING_ON_STARTUP",
        Fate::Ignored(
            "unfinished tasks always resume: they live in the database and any replica's workers \
             pick them up; to run a replica without workers use `modelgen serve --api-only`",
        ),
    ),
    ("API_AUTH_ENABLED", Fate::Kept),
    ("API_AUTH_TOKEN", Fate::Kept),
    ("CALLBACK_URL", Fate::Kept),
    ("CALLBACK_TOKEN", Fate::Kept),
    ("CALLBACK_MAX_RETRIES", Fate::Kept),
    ("HTTP_TIMEOUT", Fate::Kept),
    ("RETRY_MAX_ATTEMPTS", Fate::Kept),
    ("RETRY_BASE_DELAY", Fate::Kept),
    ("RETRY_MAX_DELAY", Fate::Kept),
    ("OSS_ENDPOINT", Fate::Kept),
    ("OSS_BUCKET", Fate::Kept),
    ("OSS_ACCESS_KEY_ID", Fate::Kept),
    ("OSS_ACCESS_KEY_SECRET", Fate::Kept),
];

/// One of the earlier service's variables found set, and what it means here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyNote {
    /// The variable's canonical (upper-case) name.
    pub name: &'static str,
    /// `ignored: <reason>` or a caveat about a kept variable.
    pub message: String,
}

/// Notes for the earlier service's variables set in `vars` (the process
/// environment after `.env` was loaded): every ignored one with its reason,
/// and kept ones whose value behaves differently from what an operator of the
/// earlier service may expect. Values are never repeated (they may be secrets).
pub fn notes(vars: impl IntoIterator<Item = (String, String)>, config: &Config) -> Vec<LegacyNote> {
    let set: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .collect();
    let is_set = |name: &str| set.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut out = Vec::new();
    for (name, fate) in LEGACY_VARIABLES {
        if !is_set(name) {
            continue;
        }
        match fate {
            Fate::Ignored(reason) => out.push(LegacyNote {
                name,
                message: format!("ignored: {reason}"),
            }),
            Fate::Kept => {
                if let Some(message) = caveat(name, config) {
                    out.push(LegacyNote { name, message });
                }
            }
        }
    }
    out
}

/// A kept variable whose value means something an operator should hear about.
fn caveat(name: &str, config: &Config) -> Option<String> {
    match name {
        "CALLBACK_MAX_RETRIES" => config.callback_max_retries.map(|n| {
            format!(
                "a callback is given up (`dead`) after {n} delivery attempts; unset it to keep \
                 retrying with backoff for CALLBACK_HORIZON ({} s)",
                config.callback_horizon
            )
        }),
        "API_AUTH_ENABLED"
            if config.api_auth_enabled == Some(false) && config.api_auth_token.is_some() =>
        {
            Some(
                "false: requests are not authenticated although API_AUTH_TOKEN is set (as in the \
                 earlier service); set it to true to require the token"
                    .to_owned(),
            )
        }
        // One note for the four OSS variables: where images go (docs/storage.md).
        "OSS_ACCESS_KEY_ID" => Some(match crate::storage::resolve(config) {
            Ok(crate::storage::Storage::S3 {
                settings,
                oss: true,
                ..
            }) => format!(
                "images are stored in Aliyun OSS bucket `{}` through its S3-compatible endpoint {} \
                 (virtual-hosted style), as the earlier service stored them",
                settings.bucket,
                settings.endpoint.as_deref().unwrap_or_default()
            ),
            Ok(crate::storage::Storage::S3 { .. }) => "not used: STORAGE_URL and the AWS_* \
                 settings name the image store"
                .to_owned(),
            Ok(crate::storage::Storage::Local { .. }) => {
                "not used: STORAGE_URL names a local directory for images".to_owned()
            }
            Err(e) => format!("cannot be used: {e}"),
        }),
        // The other kept variables mean what they meant.
        _ => None,
    }
}

/// [`notes`] for the current process environment.
pub fn notes_from_env(config: &Config) -> Vec<LegacyNote> {
    notes(std::env::vars(), config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ENV_KEYS;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The earlier service's settings module and .env example, as listed in
    /// docs/legacy.md.
    const EARLIER_SERVICE_VARIABLES: [&str; 22] = [
        "DATABASE_URL",
        "DATABASE_ECHO",
        "APIMART_API_KEY",
        "APIMART_BASE_URL",
        "APIMART_MODEL",
        "TASK_POLL_INTERVAL",
        "TASK_TIMEOUT",
        "APIMART_TASK_RETENTION_DAYS",
        "RESUME_POLLING_ON_STARTUP",
        "API_AUTH_ENABLED",
        "API_AUTH_TOKEN",
        "CALLBACK_URL",
        "CALLBACK_TOKEN",
        "CALLBACK_MAX_RETRIES",
        "HTTP_TIMEOUT",
        "RETRY_MAX_ATTEMPTS",
        "RETRY_BASE_DELAY",
        "RETRY_MAX_DELAY",
        "OSS_ENDPOINT",
        "OSS_BUCKET",
        "OSS_ACCESS_KEY_ID",
        "OSS_ACCESS_KEY_SECRET",
    ];

    #[test]
    fn every_earlier_variable_is_kept_by_a_setting_or_ignored_with_a_reason() {
        let names: Vec<&str> = LEGACY_VARIABLES.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, EARLIER_SERVICE_VARIABLES);
        for (name, fate) in LEGACY_VARIABLES {
            match fate {
                Fate::Kept => assert!(ENV_KEYS.contains(name), "{name} is kept but not read"),
                Fate::Ignored(reason) => {
                    assert!(
                        !ENV_KEYS.contains(name),
                        "{name} is read as a setting: it is not ignored any more"
                    );
                    assert!(reason.len() > 20, "{name}: give a real reason");
                }
            }
        }
    }

    #[test]
    fn only_set_variables_are_reported_in_any_case_without_their_values() {
        let config = Config::default();
        let notes = notes(
            env(&[
                ("database_echo", "True"),
                ("OSS_ACCESS_KEY_SECRET", "oss-secret-value-123"),
                ("resume_polling_on_startup", "   "),
                ("DATABASE_URL", "sqlite://x.db"),
                ("UNRELATED", "1"),
            ]),
            &config,
        );
        let names: Vec<&str> = notes.iter().map(|n| n.name).collect();
        assert_eq!(names, ["DATABASE_ECHO"]);
        assert!(notes.iter().all(|n| n.message.starts_with("ignored: ")));
        assert!(!format!("{notes:?}").contains("oss-secret-value-123"));
    }

    #[test]
    fn oss_variables_say_where_images_go() {
        let oss = Config {
            oss_access_key_id: Some("LTAIx".into()),
            oss_access_key_secret: Some(crate::config::Secret::new("s")),
            ..Config::default()
        };
        let vars = env(&[
            ("OSS_ACCESS_KEY_ID", "LTAIx"),
            ("OSS_ACCESS_KEY_SECRET", "s"),
        ]);
        let n = notes(vars.clone(), &oss);
        assert_eq!(n.len(), 1, "{n:?}");
        assert!(
            n[0].message.contains("bucket `suitme`")
                && n[0]
                    .message
                    .contains("https://s3.oss-cn-shenzhen.aliyuncs.com"),
            "{n:?}"
        );
        let local = Config {
            storage_url: Some("file://data/images".into()),
            ..oss
        };
        let n = notes(vars, &local);
        assert!(n[0].message.contains("not used"), "{n:?}");
    }

    #[test]
    fn kept_variables_with_surprising_values_get_a_caveat() {
        let config = Config {
            callback_max_retries: Some(3),
            api_auth_enabled: Some(false),
            api_auth_token: Some(crate::config::Secret::new("t")),
            ..Config::default()
        };
        let notes = notes(
            env(&[
                ("CALLBACK_MAX_RETRIES", "3"),
                ("API_AUTH_ENABLED", "False"),
                ("API_AUTH_TOKEN", "t"),
            ]),
            &config,
        );
        let names: Vec<&str> = notes.iter().map(|n| n.name).collect();
        assert_eq!(names, ["API_AUTH_ENABLED", "CALLBACK_MAX_RETRIES"]);
        assert!(notes[0].message.contains("not authenticated"), "{notes:?}");
        assert!(
            notes[1].message.contains("after 3 delivery attempts"),
            "{notes:?}"
        );
    }
}
