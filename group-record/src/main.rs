//! group-record: the group's record database for scripts (PeerGroupAddRecord,
//! UpdateRecord, DeleteRecord, GetRecord, EnumRecords, SearchRecords).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use common::admin::{self, Session};
use common::cli::{self, MembershipArgs, parse_duration_arg};
use common::pki::Role;
use common::record::{AttrValue, MAX_DATA_BYTES, Record};
use common::records::{self, Change, Query, Signer};
use uuid::Uuid;

/// Publish and query typed records in GROUP: build results, inventories, anything a
/// script wants every member to have. Records spread like chat messages; with
/// group-chat running for the membership they spread at once, else at its next start.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "TYPE is a UUID or a short name (the same name means the same type in a group). --attr K=V sets a string, K:int=V an integer, K:date=RFC3339 a date. A QUERY is space-separated terms joined by AND: K=V (* is a wildcard in strings), K<V, K<=V, K>V, K>=V (integers and dates).\n\nExamples:\n  group-record add --identity ci --group Builds --type build --attr commit=3f2a9c --attr number:int=42 --data log.txt\n  group-record list --identity bob --group Builds --type build --json\n  group-record search --identity bob --group Builds 'number>=40 commit=3f*'\n  group-record update --identity ci --group Builds ID --attr status=passed\n  group-record delete --identity ci --group Builds ID"
)]
struct Args {
    #[command(subcommand)]
    action: Action,
}

/// What to set on a record.
#[derive(Debug, clap::Args)]
struct Setting {
    /// Set attribute K (repeatable): K=V a string, K:int=V an integer, K:date=RFC3339 a date
    #[arg(long = "attr", value_name = "K=V", value_parser = parse_attr)]
    attrs: Vec<(String, AttrValue)>,
    /// The record's data: a file, or - for stdin (at most 64 KiB)
    #[arg(long, value_name = "FILE")]
    data: Option<String>,
    /// How long from now the record lives (default, and at most: the group's message
    /// lifetime from the record's creation)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    expires: Option<Duration>,
}

/// How to print what is read.
#[derive(Debug, clap::Args)]
struct Output {
    /// One JSON object per record (see README)
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Publish a new record of TYPE; prints its id
    Add {
        #[command(flatten)]
        target: MembershipArgs,
        /// Record type: a UUID or a short name
        #[arg(long = "type", value_name = "TYPE")]
        rtype: String,
        #[command(flatten)]
        setting: Setting,
    },
    /// Publish a new version of record ID (its creator or an admin); prints its id
    Update {
        #[command(flatten)]
        target: MembershipArgs,
        /// The record's id
        id: Uuid,
        #[command(flatten)]
        setting: Setting,
    },
    /// Delete record ID (its creator or an admin); prints its id
    Delete {
        #[command(flatten)]
        target: MembershipArgs,
        /// The record's id
        id: Uuid,
    },
    /// Print record ID
    Get {
        #[command(flatten)]
        target: MembershipArgs,
        /// The record's id
        id: Uuid,
        #[command(flatten)]
        output: Output,
    },
    /// Print the live records (of TYPE, with the attributes given, modified since T)
    List {
        #[command(flatten)]
        target: MembershipArgs,
        /// Only records of this type
        #[arg(long = "type", value_name = "TYPE")]
        rtype: Option<String>,
        /// Only records with this attribute (repeatable; * is a wildcard in strings)
        #[arg(long = "attr", value_name = "K=V", value_parser = parse_attr)]
        attrs: Vec<(String, AttrValue)>,
        /// Only records modified at or after T (RFC 3339, or a duration meaning that long ago: 2h)
        #[arg(long, value_name = "T", value_parser = cli::parse_time_arg)]
        since: Option<i64>,
        #[command(flatten)]
        output: Output,
    },
    /// Print the live records QUERY matches
    Search {
        #[command(flatten)]
        target: MembershipArgs,
        /// Terms joined by AND: K=V, K<V, K<=V, K>V, K>=V
        query: String,
        /// Only records of this type
        #[arg(long = "type", value_name = "TYPE")]
        rtype: Option<String>,
        #[command(flatten)]
        output: Output,
    },
}

fn parse_attr(text: &str) -> Result<(String, AttrValue), String> {
    records::parse_attr(text).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = cli::parse::<Args>();
    cli::init_logging();
    cli::run("group-record", || run(args))
}

/// The member's session in the membership `t` names.
fn open(t: &MembershipArgs) -> anyhow::Result<Session> {
    let home = t.home.home()?;
    Session::open(&home, &t.identity, &t.group).with_context(|| format!("cannot use {:?} in {:?}", t.identity, t.group))
}

/// Signs as the session's member, under the lifetimes in force.
fn signer(s: &Session) -> anyhow::Result<Signer<'_>> {
    let props = admin::properties_now(&s.membership, &s.store)?;
    Ok(Signer {
        group: &s.membership.group.id,
        key: &s.identity.key,
        me: s.membership.membership.member_id,
        admin: s.membership.role == Role::Admin,
        now_ms: s.now_ms(),
        max_life_ms: props.lifetimes().message_ms,
    })
}

fn change(setting: Setting) -> anyhow::Result<Change> {
    let data = match setting.data.as_deref() {
        Some(src) => {
            let (_, bytes) = cli::read_input_capped(Some(src), "data", MAX_DATA_BYTES)?;
            records::check_data(&bytes)?;
            Some(bytes)
        }
        None => None,
    };
    Ok(Change {
        attrs: setting.attrs,
        data,
        lifetime_ms: setting
            .expires
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
    })
}

/// The live record `id` in the session's store.
fn existing(s: &Session, id: &Uuid) -> anyhow::Result<Record> {
    match s.store.get(id)? {
        Some(r) if !records::is_reserved(&r.rtype) => Ok(r),
        _ => anyhow::bail!("no record {id} in {}", s.membership.group.name),
    }
}

/// Publishes `r` and says so on stderr; prints its id.
fn publish(s: &Session, r: &Record, what: &str) -> anyhow::Result<()> {
    let said = s.publish(std::slice::from_ref(r), &format!("{what} {}", r.id))?;
    cli::note("group-record", &said);
    cli::write_stdout(format!("{}\n", r.id).as_bytes())
}

fn run(args: Args) -> anyhow::Result<()> {
    match args.action {
        Action::Add { target, rtype, setting } => {
            let s = open(&target)?;
            let t = records::record_type(&s.membership.group.id, &rtype)?;
            let r = signer(&s)?.create(t, change(setting)?)?;
            publish(&s, &r, "added")
        }
        Action::Update { target, id, setting } => {
            let s = open(&target)?;
            let old = existing(&s, &id)?;
            let r = signer(&s)?.update(&old, change(setting)?)?;
            publish(&s, &r, "updated")
        }
        Action::Delete { target, id } => {
            let s = open(&target)?;
            let old = existing(&s, &id)?;
            let r = signer(&s)?.delete(&old)?;
            publish(&s, &r, "deleted")
        }
        Action::Get { target, id, output } => {
            let s = open(&target)?;
            let r = existing(&s, &id)?;
            if r.deleted || r.expires_ms <= s.now_ms() {
                anyhow::bail!("record {id} is {}", if r.deleted { "deleted" } else { "expired" });
            }
            let text = if output.json {
                format!("{}\n", records::to_json(&r))
            } else {
                records::describe(&r, |m| s.known.names.display(m))
            };
            cli::write_stdout(text.as_bytes())
        }
        Action::List {
            target,
            rtype,
            attrs,
            since,
            output,
        } => {
            let s = open(&target)?;
            let query = Query::of_attrs(&attrs);
            print_found(&s, rtype.as_deref(), &query, since, output.json)
        }
        Action::Search {
            target,
            query,
            rtype,
            output,
        } => {
            let s = open(&target)?;
            let query = Query::parse(&query)?;
            print_found(&s, rtype.as_deref(), &query, None, output.json)
        }
    }
}

/// Prints what `query` finds: one line or JSON object per record. A type filter
/// that names a type of which the store holds no record at all is an error (a typo,
/// most likely); filters that match nothing print nothing.
fn print_found(s: &Session, rtype: Option<&str>, query: &Query, since: Option<i64>, json: bool) -> anyhow::Result<()> {
    let t = rtype
        .map(|t| records::record_type(&s.membership.group.id, t))
        .transpose()?;
    let now = s.now_ms();
    if let (Some(t), Some(name)) = (t, rtype)
        && records::find(&s.store, Some(&t), &Query::default(), None, now)?.is_empty()
    {
        anyhow::bail!("no records of type {name} ({t}) in {}", s.membership.group.name);
    }
    let mut out = String::new();
    for r in records::find(&s.store, t.as_ref(), query, since, now)? {
        if json {
            out.push_str(&records::to_json(&r).to_string());
        } else {
            out.push_str(&records::to_line(&r, &s.known.names.display(&r.creator)));
        }
        out.push('\n');
    }
    cli::write_stdout(out.as_bytes())
}
