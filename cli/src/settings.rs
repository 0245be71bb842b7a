//! The deployment's guardrails as a local command sees them: the PODBRIDGE_* variables
//! the functions read, through the same parser ([`Settings::from_lookup`]), with
//! command-line overrides on top.
//!
//! The functions refuse to start without `PODBRIDGE_NAMESPACES` and
//! `PODBRIDGE_IMAGE_PREFIXES`: there is no safe deployment-wide default for them. A
//! laptop usually has neither, so a local command assumes permissive values for those
//! two (and says so); every other variable keeps the default the functions use,
//! because that default is what an unconfigured deployment enforces. Assuming more
//! (say, any service account) would show pods the deployment would refuse.

use std::collections::BTreeMap;

use podbridge::settings::{Settings, var};

/// Values for the variables a deployment must set and a local command may go without.
const LOCAL_FALLBACKS: [(&str, &str); 2] = [(var::NAMESPACES, "podbridge-jobs"), (var::IMAGE_PREFIXES, "*")];

/// The job table and the queue table are required by the functions' settings; a local
/// command that uses them fixes them (see [`Local::from_env_with`]), the others never
/// touch these placeholders.
const NO_TABLES: [(&str, &str); 2] =
    [(var::TABLE, "unused-by-local-commands"), (var::QUEUE_TABLE, "unused-by-local-commands")];

/// Guardrail flags shared by the commands that validate messages. Each replaces its
/// PODBRIDGE_* variable entirely (it does not add to it).
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Guardrails (each flag replaces its PODBRIDGE_* variable)")]
pub struct Overrides {
    /// A namespace jobs may run in; repeat or comma-separate for more (the first is
    /// the default). Replaces PODBRIDGE_NAMESPACES [local fallback: podbridge-jobs].
    #[arg(long = "namespace-allowed", value_name = "NAMESPACE", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// An image prefix jobs may use (`registry.example.com/team/`, or `*` for any image);
    /// repeat or comma-separate for more. Replaces PODBRIDGE_IMAGE_PREFIXES [local fallback: *].
    #[arg(long = "image-prefix", value_name = "PREFIX", value_delimiter = ',')]
    pub image_prefixes: Vec<String>,
    /// A ServiceAccount jobs may ask for; repeat or comma-separate for more. Replaces
    /// PODBRIDGE_SERVICE_ACCOUNTS [default: none allowed].
    #[arg(long = "service-account", value_name = "NAME", value_delimiter = ',')]
    pub service_accounts: Vec<String>,
    /// Allow environment variables taken from Secrets. Replaces
    /// PODBRIDGE_ALLOW_SECRET_REFS [default: false].
    #[arg(long)]
    pub allow_secret_refs: bool,
}

impl Overrides {
    /// The overrides as the variables they replace.
    fn variables(&self) -> BTreeMap<&'static str, String> {
        let mut variables = BTreeMap::new();
        for (name, values) in [
            (var::NAMESPACES, &self.namespaces),
            (var::IMAGE_PREFIXES, &self.image_prefixes),
            (var::SERVICE_ACCOUNTS, &self.service_accounts),
        ] {
            if !values.is_empty() {
                variables.insert(name, values.join(","));
            }
        }
        if self.allow_secret_refs {
            variables.insert(var::ALLOW_SECRET_REFS, "true".to_owned());
        }
        variables
    }
}

/// The deployment's settings as a local command sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct Local {
    /// The settings the functions would read, with the local fallbacks.
    pub settings: Settings,
    /// The variables that had no value and got a local fallback, with that fallback.
    pub assumed: Vec<(&'static str, &'static str)>,
}

impl Local {
    /// Reads the settings from the process environment and `overrides`.
    pub fn from_env(overrides: &Overrides) -> podbridge::Result<Self> {
        Self::from_env_with(overrides, &[], &[])
    }

    /// Reads the settings from the process environment and `overrides`, with `fixed`
    /// variables that win over both (what the command itself knows: the table it was
    /// pointed at, the local stack's bus and kubeconfig) and `defaults` for variables
    /// that none of them set (`podbridge dev`'s local thresholds).
    pub fn from_env_with(
        overrides: &Overrides,
        fixed: &[(&str, String)],
        defaults: &[(&str, &str)],
    ) -> podbridge::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok(), overrides, fixed, defaults)
    }

    /// Reads the settings through `env` (the environment, or a map in tests): a fixed
    /// value wins, then an override, then the variable, then a default, then the local
    /// fallback. A blank value counts as unset, as it does for the functions, so a
    /// fixed blank value unsets a variable.
    pub fn from_lookup(
        env: impl Fn(&str) -> Option<String>,
        overrides: &Overrides,
        fixed: &[(&str, String)],
        defaults: &[(&str, &str)],
    ) -> podbridge::Result<Self> {
        let overrides = overrides.variables();
        let fixed = |name: &str| fixed.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        let given = |name: &str| match fixed(name) {
            Some(value) => Some(value).filter(|v| !v.trim().is_empty()),
            None => overrides.get(name).cloned().or_else(|| env(name)).filter(|v| !v.trim().is_empty()),
        };
        let assumed: Vec<_> = LOCAL_FALLBACKS.into_iter().filter(|(name, _)| given(name).is_none()).collect();
        let settings = Settings::from_lookup(|name| {
            given(name).or_else(|| {
                defaults
                    .iter()
                    .copied()
                    .chain(LOCAL_FALLBACKS)
                    .chain(NO_TABLES)
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_owned())
            })
        })?;
        Ok(Self { settings, assumed })
    }

    /// A one-line note on what was assumed, if anything was.
    pub fn assumed_note(&self) -> Option<String> {
        if self.assumed.is_empty() {
            return None;
        }
        let pairs: Vec<String> = self.assumed.iter().map(|(name, value)| format!("{name}={value}")).collect();
        Some(format!(
            "note: not set, assumed for local use: {}; set the variables or pass --namespace-allowed / \
             --image-prefix to check against a deployment's guardrails",
            pairs.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn local(env: &[(&str, &str)], overrides: &Overrides) -> podbridge::Result<Local> {
        let map: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Local::from_lookup(|name| map.get(name).cloned(), overrides, &[], &[])
    }

    #[test]
    fn an_empty_environment_gets_the_local_fallbacks_and_says_so() {
        let local = local(&[], &Overrides::default()).unwrap();
        assert_eq!(local.settings.guardrails.namespaces, ["podbridge-jobs"]);
        assert_eq!(local.settings.guardrails.image_prefixes, ["*"]);
        assert_eq!(
            local.settings.guardrails.service_accounts,
            Vec::<String>::new(),
            "the deployment default, not a fallback"
        );
        assert!(!local.settings.guardrails.allow_secret_refs);
        let note = local.assumed_note().unwrap();
        assert!(note.contains("PODBRIDGE_NAMESPACES=podbridge-jobs, PODBRIDGE_IMAGE_PREFIXES=*"), "{note}");
        assert!(!note.contains('\n'));
    }

    #[test]
    fn a_configured_environment_is_used_as_it_is() {
        let env = [
            ("PODBRIDGE_NAMESPACES", "batch,etl"),
            ("PODBRIDGE_IMAGE_PREFIXES", "registry.example.com/"),
            ("PODBRIDGE_MAX_ATTEMPTS", "5"),
            ("PODBRIDGE_TERMINATION_GRACE_SECONDS", "120"),
        ];
        let local = local(&env, &Overrides::default()).unwrap();
        assert_eq!(local.settings.guardrails.namespaces, ["batch", "etl"]);
        assert_eq!(local.settings.guardrails.image_prefixes, ["registry.example.com/"]);
        assert_eq!(local.settings.guardrails.max_attempts, 5);
        assert_eq!(local.settings.pods.termination_grace_period_seconds, 120);
        assert_eq!(local.assumed_note(), None);
    }

    #[test]
    fn overrides_replace_the_variables() {
        let env = [("PODBRIDGE_NAMESPACES", "batch"), ("PODBRIDGE_SERVICE_ACCOUNTS", "reader")];
        let overrides = Overrides {
            namespaces: vec!["etl".into()],
            image_prefixes: vec!["a/".into(), "b/".into()],
            service_accounts: vec!["writer".into()],
            allow_secret_refs: true,
        };
        let local = local(&env, &overrides).unwrap();
        assert_eq!(local.settings.guardrails.namespaces, ["etl"]);
        assert_eq!(local.settings.guardrails.image_prefixes, ["a/", "b/"]);
        assert_eq!(local.settings.guardrails.service_accounts, ["writer"]);
        assert!(local.settings.guardrails.allow_secret_refs);
        assert!(local.assumed.is_empty());
    }

    #[test]
    fn the_tables_are_placeholders_unless_given_or_fixed() {
        let local_env = local(&[], &Overrides::default()).unwrap();
        assert_eq!(local_env.settings.queue_table, "unused-by-local-commands");
        let map: HashMap<String, String> = HashMap::from([("PODBRIDGE_QUEUE_TABLE".into(), "queues-env".into())]);
        let fixed = [(var::QUEUE_TABLE, "queues-fixed".to_owned())];
        let from_env = Local::from_lookup(|name| map.get(name).cloned(), &Overrides::default(), &[], &[]).unwrap();
        assert_eq!(from_env.settings.queue_table, "queues-env");
        let fixed = Local::from_lookup(|name| map.get(name).cloned(), &Overrides::default(), &fixed, &[]).unwrap();
        assert_eq!(fixed.settings.queue_table, "queues-fixed");
    }

    #[test]
    fn a_blank_variable_is_unset_and_a_bad_one_is_an_error() {
        let local_blank = local(&[("PODBRIDGE_IMAGE_PREFIXES", " ")], &Overrides::default()).unwrap();
        assert_eq!(local_blank.settings.guardrails.image_prefixes, ["*"]);
        let error = local(&[("PODBRIDGE_MAX_MEMORY", "lots")], &Overrides::default()).unwrap_err().to_string();
        assert!(error.contains("PODBRIDGE_MAX_MEMORY"), "{error}");
    }
}
