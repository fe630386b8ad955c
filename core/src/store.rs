//! ClickHouse connection settings shared by the services and the migrator.

use clap::Args;

/// `[A-Za-z_][A-Za-z0-9_]*`, at most 64 bytes: safe to write into DDL where
/// an identifier cannot be bound.
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The tables of the analysts' database the services write to (through
/// the ledger's materialised view, and `later_conversions` directly) and
/// erase from.
pub const SQL_TABLES: &[&str] = &["journeys", "later_conversions"];

#[derive(Debug, Clone, Args)]
pub struct StoreConfig {
    /// ClickHouse HTTP endpoint.
    #[arg(
        global = true,
        long = "clickhouse-url",
        env = "ENSEMBLE_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    pub url: String,
    /// Database holding the ensemble tables.
    #[arg(
        global = true,
        long = "clickhouse-database",
        env = "ENSEMBLE_CLICKHOUSE_DATABASE",
        default_value = "ensemble"
    )]
    pub database: String,
    #[arg(
        global = true,
        long = "clickhouse-user",
        env = "ENSEMBLE_CLICKHOUSE_USER",
        default_value = "default"
    )]
    pub user: String,
    #[arg(
        global = true,
        long = "clickhouse-password",
        env = "ENSEMBLE_CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub password: String,
    /// Cluster mode: the `remote_servers` cluster of the ClickHouse servers.
    /// The migrator then creates replicated `*_local` tables on every node
    /// (ON CLUSTER) and `Distributed` tables over them, sharded by visitor;
    /// the services read and write the distributed tables. Empty: one node.
    #[arg(
        global = true,
        long = "clickhouse-cluster",
        env = "ENSEMBLE_CLICKHOUSE_CLUSTER",
        default_value = ""
    )]
    pub cluster: String,
}

impl StoreConfig {
    pub fn new(url: impl Into<String>, database: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            database: database.into(),
            user: "default".into(),
            password: String::new(),
            cluster: String::new(),
        }
    }

    /// The same settings in cluster mode on `cluster`.
    pub fn on_cluster(mut self, cluster: impl Into<String>) -> Self {
        self.cluster = cluster.into();
        self
    }

    pub fn is_cluster(&self) -> bool {
        !self.cluster.is_empty()
    }

    /// The analysts' database (docs/figures.md "SQL access for analysts"): the views and the
    /// table behind them, all the read-only analyst user may read.
    pub fn sql_database(&self) -> String {
        format!("{}_sql", self.database)
    }

    /// Where DDL and mutations on `table` go: the table itself on one node;
    /// in cluster mode its local tables on every node
    /// (`<db>.<table>_local ON CLUSTER <cluster>`). The tables of
    /// [`SQL_TABLES`] are in [`Self::sql_database`].
    pub fn ddl_target(&self, table: &str) -> String {
        let database = if SQL_TABLES.contains(&table) {
            self.sql_database()
        } else {
            self.database.clone()
        };
        if self.is_cluster() {
            format!("{database}.{table}_local ON CLUSTER {}", self.cluster)
        } else if database == self.database {
            table.to_owned()
        } else {
            format!("{database}.{table}")
        }
    }

    /// Checks the settings; the error names the flag at fault.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        use crate::config::ConfigError;
        let url = url::Url::parse(&self.url).map_err(|e| {
            ConfigError::new(
                "--clickhouse-url",
                format!("`{}` is not a URL: {e}", self.url),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConfigError::new(
                "--clickhouse-url",
                "must be http:// or https://",
            ));
        }
        if !is_identifier(&self.database) {
            return Err(ConfigError::new(
                "--clickhouse-database",
                format!("`{}` must match [A-Za-z_][A-Za-z0-9_]*", self.database),
            ));
        }
        if self.is_cluster() && !is_identifier(&self.cluster) {
            return Err(ConfigError::new(
                "--clickhouse-cluster",
                format!("`{}` must match [A-Za-z_][A-Za-z0-9_]*", self.cluster),
            ));
        }
        Ok(())
    }

    /// A client without a default database (for `CREATE DATABASE`).
    pub fn server_client(&self) -> clickhouse::Client {
        // The old server (18.16) has no RowBinaryWithNamesAndTypes: no validation.
        let client = clickhouse::Client::default()
            .with_url(&self.url)
            .with_user(&self.user)
            .with_password(&self.password)
            .with_validation(false);
        if self.is_cluster() {
            // An INSERT returns once every shard has its rows (so offsets are
            // committed only after ClickHouse has them), and a subquery on a
            // distributed table inside a distributed query is computed once
            // and sent to the shards (GLOBAL IN / JOIN): exact for any key.
            client
                .with_setting("insert_distributed_sync", "1")
                .with_setting("distributed_product_mode", "global")
        } else {
            client
        }
    }

    /// A client on the configured database.
    pub fn client(&self) -> clickhouse::Client {
        self.server_client().with_database(&self.database)
    }
}

/// True when ClickHouse answers and the configured database has the
/// `events`, `ledger` and `figures` tables (so a service that is not ready
/// says "run migrate").
pub async fn schema_ready(store: &StoreConfig) -> bool {
    store
        .server_client()
        .query("SELECT count() FROM system.tables WHERE database = ? AND name IN ('events', 'ledger', 'figures')")
        .bind(&store.database)
        .fetch_one::<u64>()
        .await
        .is_ok_and(|n| n == 3)
}

/// [`schema_ready`] for every campaign's database.
pub async fn all_ready(stores: &[StoreConfig]) -> bool {
    for s in stores {
        if !schema_ready(s).await {
            return false;
        }
    }
    true
}

/// The campaigns a deployment serves and the database of each: the main
/// campaign (`--campaign`) in `--clickhouse-database`, every other one
/// (`--also-campaign FILE=DATABASE`) in its own database, so that nothing
/// of one campaign's figures can leak into another's.
#[derive(Debug, Clone)]
pub struct CampaignDatabases {
    pub campaigns: ensemble_model::Campaigns,
    /// `stores[i]` holds `campaigns.get(i)`.
    pub stores: Vec<StoreConfig>,
}

impl CampaignDatabases {
    /// Loads the main campaign and the `also` ones (`FILE=DATABASE`
    /// each), validated together; errors name the flag at fault.
    pub fn load(
        main: &std::path::Path,
        store: &StoreConfig,
        also: &[String],
    ) -> Result<Self, crate::config::ConfigError> {
        use crate::config::ConfigError;
        let (campaigns, databases) = load_campaigns(main, also)?;
        let mut stores = vec![store.clone()];
        for database in databases {
            if stores.iter().any(|s| s.database == database) {
                return Err(ConfigError::new(
                    "--also-campaign",
                    format!("database `{database}` is given to two campaigns; each needs its own"),
                ));
            }
            let mut s = store.clone();
            s.database = database;
            stores.push(s);
        }
        Ok(Self { campaigns, stores })
    }

    /// One campaign in one database.
    pub fn one(campaign: crate::Campaign, store: StoreConfig) -> Self {
        Self {
            campaigns: ensemble_model::Campaigns::one(campaign),
            stores: vec![store],
        }
    }

    /// Each campaign with its database's settings.
    pub fn iter(&self) -> impl Iterator<Item = (&crate::Campaign, &StoreConfig)> {
        self.campaigns.iter().zip(&self.stores)
    }
}

/// The campaign files a service serves (docs/operations.md "Several campaigns"), as
/// every service takes them.
#[derive(Debug, Clone, Args)]
pub struct CampaignFiles {
    /// Campaign file (phases, channels, placements).
    #[arg(
        long,
        env = "ENSEMBLE_CAMPAIGN",
        default_value = "deploy/campaign.toml",
        global = true
    )]
    pub campaign: std::path::PathBuf,
    /// Another campaign served side by side, as `FILE=DATABASE` (the
    /// campaign file and the ClickHouse database of its figures; the
    /// collector reads the file only); repeat it for each. Give the
    /// collector, the processor and the dashboard the same.
    #[arg(
        long,
        env = "ENSEMBLE_ALSO_CAMPAIGNS",
        value_delimiter = ',',
        global = true
    )]
    pub also_campaign: Vec<String>,
}

impl CampaignFiles {
    /// Every campaign, validated together, and each `also` one's database.
    pub fn load(
        &self,
    ) -> Result<(ensemble_model::Campaigns, Vec<String>), crate::config::ConfigError> {
        load_campaigns(&self.campaign, &self.also_campaign)
    }

    /// Every campaign with its database: the main one in `store`'s.
    pub fn databases(
        &self,
        store: &StoreConfig,
    ) -> Result<CampaignDatabases, crate::config::ConfigError> {
        CampaignDatabases::load(&self.campaign, store, &self.also_campaign)
    }
}

/// The main campaign file and the `--also-campaign FILE=DATABASE` ones,
/// validated together (ids, calendars): the campaigns, and the database
/// named for each `also` one, same order.
pub fn load_campaigns(
    main: &std::path::Path,
    also: &[String],
) -> Result<(ensemble_model::Campaigns, Vec<String>), crate::config::ConfigError> {
    use crate::config::ConfigError;
    let first =
        crate::Campaign::load(main).map_err(|e| ConfigError::new("--campaign", e.to_string()))?;
    let mut list = vec![first];
    let mut databases = Vec::new();
    for spec in also {
        let Some((file, database)) = spec.rsplit_once('=') else {
            return Err(ConfigError::new(
                "--also-campaign",
                format!(
                    "`{spec}` must be FILE=DATABASE (the campaign file and the ClickHouse database of its figures)"
                ),
            ));
        };
        let c = crate::Campaign::load(std::path::Path::new(file))
            .map_err(|e| ConfigError::new("--also-campaign", format!("{file}: {e}")))?;
        let database = database.trim();
        if !is_identifier(database) {
            return Err(ConfigError::new(
                "--also-campaign",
                format!("database `{database}` of {file} must match [A-Za-z_][A-Za-z0-9_]*"),
            ));
        }
        list.push(c);
        databases.push(database.to_owned());
    }
    let campaigns = ensemble_model::Campaigns::new(list)
        .map_err(|e| ConfigError::new("--also-campaign", e.to_string()))?;
    Ok((campaigns, databases))
}
