//! `confluent_consume_native`: the Kafka side of the `confluent-consume` Kong plugin, loaded by LuaJIT with
//! `require "confluent_consume_native"`.
//!
//! Every function here returns at once: Kafka I/O happens on the handle's own thread, and a request that
//! has to wait does so in Lua, on the handle's doorbell socket. Runtime failures come back to Lua as
//! `nil, "message"`; only misuse (wrong argument types) raises.

pub mod buffer;
pub mod client_frame;
pub mod consumer;
pub mod diagnosis;
pub mod dlq;
pub mod doorbell;
pub mod encode;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod guard;
pub mod http;
pub mod metrics;
pub mod oauth;
pub mod probe;
pub mod query;
pub mod registry;
pub mod schema;
pub mod settings;

use std::sync::Arc;

// The module leaves the Lua symbols to its host (nginx); unit tests that run Lua link the same LuaJIT.
#[cfg(test)]
#[link(name = "luajit-5.1")]
extern "C" {}

use mlua::serde::DeserializeOptions;
use mlua::{
    FromLua, FromLuaMulti, Function, IntoLuaMulti, Lua, LuaSerdeExt, MultiValue, Result as LuaResult, Table,
    UserData, UserDataMethods, UserDataRef, Value,
};

use crate::buffer::{
    collect_pieces, format_cursor, layout_tag, offset_runs, parse_cursor, render_kong, render_sse, render_websocket,
    select, selected, selected_timestamps, Limits, Pieces, ReadMode,
};
use crate::client_frame::ClientFrame;
use crate::consumer::{Level, Phase, Shared};
use crate::error::Error;
use crate::query::{Mode, Query, QueryConfig, StreamStart};
use crate::schema::{Plugin, Rule, FIELDS};
use crate::settings::{Delivery, Handover, OffsetReset, Settings, Start};

/// A consumer handle as Lua sees it.
pub struct Handle {
    shared: Arc<Shared>,
    doorbell_path: String,
    pid: u32,
}

impl Handle {
    /// The shared state, after checking this process created the handle (nginx forks after `init_by_lua`).
    fn shared(&self) -> Result<&Shared, Error> {
        if std::process::id() != self.pid {
            return Err(Error::WrongProcess);
        }
        Ok(&self.shared)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// Output format of a read.
enum Format {
    Kong,
    Sse,
    /// One websocket frame, and the offsets it carries (for the connection's acknowledgement window).
    WebSocket,
    /// Each record's JSON on its own, for a plugin whose message functions change records before they
    /// are rendered (message_functions.lua renders them then).
    Records,
}

/// A read's first value for Lua.
enum Rendered {
    Body(Vec<u8>),
    Records(Pieces),
}

/// Where a read starts: an array parallel to the handle's partitions (the offset each continues from), or
/// a stream cursor (an SSE event id of the handle's layout), which an http-get cursor read hands over as
/// its client sent it: parsing it, checking it against the buffer (`behind`) and formatting the next one
/// happen in the read, so that a cursor read within the buffer makes one native call.
enum Position {
    Offsets(Table),
    Cursor(mlua::LuaString),
}

impl FromLua for Position {
    /// Raises (misuse) for anything but a table or a string.
    fn from_lua(value: Value, _: &Lua) -> LuaResult<Self> {
        match value {
            Value::Table(t) => Ok(Position::Offsets(t)),
            Value::String(s) => Ok(Position::Cursor(s)),
            other => Err(mlua::Error::FromLuaConversionError {
                from: other.type_name(),
                to: "cursors".into(),
                message: Some("expected an array of offsets or a stream cursor".into()),
            }),
        }
    }
}

/// The offsets of the stream cursor `text` (an SSE event id) of the layout of `partitions`, and that layout.
///
/// # Errors
/// What is wrong with the cursor (see [`parse_cursor`]); text that is not UTF-8 is malformed.
fn cursor_offsets(
    partitions: &[buffer::PartitionBuffer],
    text: &mlua::LuaString,
) -> Result<(Vec<i64>, String), String> {
    let layout = layout_tag(partitions);
    let text = text.to_str().map(|s| s.to_string()).unwrap_or_default();
    parse_cursor(&layout, partitions.len(), &text).map(|offsets| (offsets, layout))
}

/// A read of the buffer from `position` on, rendered as `format`. Queue and replay handles own their
/// readers' cursors; broadcast handles are shared by many streams and are never changed by a read.
///
/// Returns `body, next_cursors, count, behind, kafka_error` (why the handle cannot serve now, as
/// `State::unavailable` says it, or nil: a reader learns it without a `state()` call of its own), plus `sent` for a websocket frame.
/// `next_cursors` is of `position`'s kind: an array, or the stream cursor after the records.
///
/// # Errors
/// `nil, message` when the handle is not ready or belongs to another process, or (with `on_selected`)
/// while it cannot serve; `nil, message, true` when `position` is a stream cursor this handle refuses
/// (malformed, of another layout, too long: the client's 400). Raises when a callback raises.
///
/// With `on_selected` (http-get's claim, which holds the node-wide lock of cursors.lua) the records are
/// picked first, then `on_selected(next_cursors, count)` runs, then they are rendered: the claim's
/// bookkeeping and its lock's release happen in between, so that other workers never wait for a
/// rendering, and a GET still makes one call for its records. The handle's own lock is not held while
/// it runs (the callback may call the handle again without deadlocking it); what was picked stays in
/// the buffer meanwhile, as only a read of this handle drops records of a queue or replay handle and
/// the consumer thread only appends. A claim is refused while the handle cannot serve (Kafka, its
/// registry or its dead-letter topic), as a GET is.
fn read(
    lua: &Lua,
    handle: &Handle,
    position: &Position,
    limits: Limits,
    format: Format,
    on_selected: Option<Function>,
) -> LuaResult<MultiValue> {
    let shared = match handle.shared() {
        Ok(s) => s,
        Err(e) => return failure(lua, e),
    };
    let mut state = shared.state.lock();
    // A closed handle still answers from what it holds, so that a request that was waiting on it when
    // the configuration changed gets a normal (usually empty) answer rather than an error.
    if state.phase == Phase::Starting {
        return failure(lua, "consumer is not ready");
    }
    let unavailable = state.unavailable();
    if let (Some(_), Some(reason)) = (&on_selected, &unavailable) {
        return failure(lua, reason);
    }
    let kafka_error = match unavailable {
        Some(reason) => Value::String(lua.create_string(reason)?),
        None => Value::Nil,
    };
    // the layout a stream cursor was parsed in, to format the next one
    let (offsets, layout) = match position {
        Position::Offsets(cursors) => {
            let mut offsets = Vec::with_capacity(state.partitions.len());
            for (i, p) in state.partitions.iter().enumerate() {
                let cursor: Option<i64> = cursors.raw_get(i + 1)?;
                offsets.push(cursor.or(p.start).unwrap_or(0));
            }
            (offsets, None)
        }
        Position::Cursor(text) => match cursor_offsets(&state.partitions, text) {
            Ok((offsets, layout)) => (offsets, Some(layout)),
            Err(e) => return refused(lua, e),
        },
    };
    let first = state.rotation;
    state.rotation = state.rotation.wrapping_add(1);
    let mode = match shared.settings.delivery {
        Delivery::Broadcast => ReadMode::Shared,
        Delivery::Queue | Delivery::Replay => ReadMode::Own,
    };
    let selection = select(&mut state.partitions, &offsets, first, limits, mode);
    if selection.total > 0 {
        observe_ages(shared, &state.partitions, &offsets, &selection);
    }
    let next_cursors = match &layout {
        Some(layout) => {
            let mut text = Vec::new();
            format_cursor(layout, &selection.next, &mut text);
            Value::String(lua.create_string(text)?)
        }
        None => Value::Table(lua.create_sequence_from(selection.next.iter().copied())?),
    };
    if let Some(on_selected) = on_selected {
        drop(state);
        on_selected.call::<()>((next_cursors.clone(), selection.total))?;
        state = shared.state.lock();
    }
    let rendered = match format {
        Format::Kong => Rendered::Body(render_kong(&state.partitions, &offsets, &selection)),
        Format::Sse => {
            Rendered::Body(render_sse(&state.partitions, &offsets, &selection, &layout_tag(&state.partitions)))
        }
        Format::WebSocket => Rendered::Body(render_websocket(
            &state.partitions,
            &offsets,
            &selection,
            &layout_tag(&state.partitions),
        )),
        Format::Records => Rendered::Records(collect_pieces(&state.partitions, &offsets, &selection)),
    };
    // websocket: per partition index (1-based) the offsets of its records in the frame as runs (see
    // offset_runs), when it has any
    let mut sent = Vec::new();
    if matches!(format, Format::WebSocket) {
        for (i, p) in state.partitions.iter().enumerate() {
            if selection.counts[i] > 0 {
                sent.push((i + 1, offset_runs(selected(p, offsets[i], selection.counts[i]).map(|r| r.offset))));
            }
        }
    }
    drop(state);
    let first = match rendered {
        Rendered::Body(body) => Value::String(lua.create_string(&body)?),
        Rendered::Records(pieces) => Value::Table(records_table(lua, &pieces)?),
    };
    let mut values = vec![
        first,
        next_cursors,
        Value::Integer(selection.total as i64),
        Value::Boolean(selection.behind),
        kafka_error,
    ];
    if matches!(format, Format::WebSocket) {
        let table = lua.create_table_with_capacity(0, sent.len())?;
        for (i, list) in sent {
            table.raw_set(i, lua.create_sequence_from(list)?)?;
        }
        values.push(Value::Table(table));
    }
    Ok(MultiValue::from_vec(values))
}

/// Each record a read hands out: how long ago the broker stamped it.
fn observe_ages(shared: &Shared, partitions: &[buffer::PartitionBuffer], cursors: &[i64], selection: &buffer::Selection) {
    if !metrics::counting_record_ages() {
        return;
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for timestamp in selected_timestamps(partitions, cursors, selection) {
        shared.counters.record_age.observe((now_ms - timestamp) as f64 / 1000.0);
    }
}

/// `native.metrics()`: this worker's counters (what they grew by since the last call) and gauges, each a
/// table of series key -> value (see metrics.rs).
fn metrics_snapshot(lua: &Lua, (): ()) -> LuaResult<(Table, Table)> {
    let (counters, gauges) = metrics::snapshot();
    let counter_table = lua.create_table_with_capacity(0, counters.len())?;
    for (k, v) in counters {
        counter_table.raw_set(k, v)?;
    }
    let gauge_table = lua.create_table_with_capacity(0, gauges.len())?;
    for (k, v) in gauges {
        gauge_table.raw_set(k, v)?;
    }
    Ok((counter_table, gauge_table))
}

/// A Lua sequence of `{ key, value }` pairs.
fn pairs_of(gauges: &Table) -> LuaResult<Vec<(String, f64)>> {
    let mut list = Vec::with_capacity(gauges.raw_len());
    for pair in gauges.sequence_values::<Table>() {
        let pair = pair?;
        list.push((pair.raw_get::<String>(1)?, pair.raw_get::<f64>(2)?));
    }
    Ok(list)
}

/// `native.merge_gauges(gauges)`: every worker's gauges (`{ {key, value}, ... }`) as the node's, key ->
/// value, with the lags derived (for Kong's prometheus plugin, metrics.lua).
fn merge_gauges(lua: &Lua, gauges: Table) -> LuaResult<Table> {
    let merged = metrics::merge_gauges(&pairs_of(&gauges)?);
    let table = lua.create_table_with_capacity(0, merged.len())?;
    for (k, v) in merged {
        table.raw_set(k, v)?;
    }
    Ok(table)
}

/// `native.metric_families()`: `{ {name =, help =, type = "counter"|"gauge"|"histogram", labels = {...}}, ... }`,
/// names without the `confluent_consume_` prefix.
fn metric_families(lua: &Lua, (): ()) -> LuaResult<Table> {
    let list = lua.create_table_with_capacity(metrics::FAMILIES.len(), 0)?;
    for f in metrics::FAMILIES {
        let entry = lua.create_table()?;
        entry.raw_set("name", f.name)?;
        entry.raw_set("help", f.help)?;
        entry.raw_set("type", match f.kind {
            metrics::Kind::Counter => "counter",
            metrics::Kind::Gauge(_) => "gauge",
            metrics::Kind::Histogram(_) => "histogram",
        })?;
        entry.raw_set("labels", lua.create_sequence_from(f.labels.iter().copied())?)?;
        list.raw_push(entry)?;
    }
    Ok(list)
}

/// `native.render_metrics(counters, gauges)`: the node's metrics in Prometheus' text format, from its
/// summed counters (key -> value) and every worker's gauges (`{ {key, value}, ... }`).
fn render_metrics(lua: &Lua, (counters, gauges): (Table, Table)) -> LuaResult<MultiValue> {
    let counters: Vec<(String, f64)> = counters.pairs::<String, f64>().collect::<LuaResult<_>>()?;
    match metrics::render(&counters, &pairs_of(&gauges)?) {
        Ok(text) => Ok(MultiValue::from_vec(vec![Value::String(lua.create_string(&text)?)])),
        Err(e) => failure(lua, e),
    }
}

/// `{ {json, ..., offsets = {...}, high_watermark = H}, ... }`: per partition its records' JSON and
/// offsets (parallel arrays), and its high watermark (absent before the first fetch).
fn records_table(lua: &Lua, pieces: &Pieces) -> LuaResult<Table> {
    let list = lua.create_table_with_capacity(pieces.partitions.len(), 0)?;
    for p in &pieces.partitions {
        let records = lua.create_table_with_capacity(p.records.len(), 2)?;
        let offsets = lua.create_table_with_capacity(p.records.len(), 0)?;
        for (j, (offset, range)) in p.records.iter().enumerate() {
            records.raw_set(j + 1, lua.create_string(&pieces.json[range.clone()])?)?;
            offsets.raw_set(j + 1, *offset)?;
        }
        records.raw_set("offsets", offsets)?;
        records.raw_set("high_watermark", p.high_watermark)?;
        list.raw_push(records)?;
    }
    Ok(list)
}

/// `nil, message` for Lua.
fn failure(lua: &Lua, err: impl std::fmt::Display) -> LuaResult<MultiValue> {
    Ok(MultiValue::from_vec(vec![Value::Nil, Value::String(lua.create_string(err.to_string())?)]))
}

/// `nil, message, true` for Lua: a stream cursor the handle refuses (the client's mistake, not Kafka's).
fn refused(lua: &Lua, err: impl std::fmt::Display) -> LuaResult<MultiValue> {
    let mut values = failure(lua, err)?;
    values.push_back(Value::Boolean(true));
    Ok(values)
}

/// Registers a handle method whose panics come back to Lua as `nil, "internal error: …"`.
fn method<M, A, R, F>(methods: &mut M, name: &str, body: F)
where
    M: UserDataMethods<Handle>,
    A: FromLuaMulti,
    R: IntoLuaMulti,
    F: Fn(&Lua, &Handle, A) -> LuaResult<R> + 'static,
{
    methods.add_method(name, move |lua, this, args: A| guard::lua_call(lua, || body(lua, this, args)));
}

/// A module function whose panics come back to Lua as `nil, "internal error: …"`.
fn function<A, R, F>(lua: &Lua, body: F) -> LuaResult<Function>
where
    A: FromLuaMulti,
    R: IntoLuaMulti,
    F: Fn(&Lua, A) -> LuaResult<R> + 'static,
{
    lua.create_function(move |lua, args: A| guard::lua_call(lua, || body(lua, args)))
}

impl UserData for Handle {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        // state() -> "starting"|"ready"|"closed", why_unavailable_or_nil (State::unavailable: whose failure
        // and its reason)
        method(methods, "state", |lua, this, ()| {
            let shared = match this.shared() {
                Ok(s) => s,
                Err(e) => return failure(lua, e),
            };
            let state = shared.state.lock();
            let phase = match state.phase {
                Phase::Starting => "starting",
                Phase::Ready => "ready",
                Phase::Closed => "closed",
            };
            let error = match state.unavailable() {
                Some(reason) => Value::String(lua.create_string(reason)?),
                None => Value::Nil,
            };
            Ok(MultiValue::from_vec(vec![Value::String(lua.create_string(phase)?), error]))
        });

        // partitions() -> { {topic=, partition=, start=}, ... } in buffer order
        method(methods, "partitions", |lua, this, ()| {
            let shared = match this.shared() {
                Ok(s) => s,
                Err(e) => return failure(lua, e),
            };
            let state = shared.state.lock();
            let list = lua.create_table_with_capacity(state.partitions.len(), 0)?;
            for p in &state.partitions {
                let entry = lua.create_table_with_capacity(0, 3)?;
                entry.raw_set("topic", p.topic.as_str())?;
                entry.raw_set("partition", p.partition)?;
                entry.raw_set("start", p.start)?;
                list.raw_push(entry)?;
            }
            Ok(MultiValue::from_vec(vec![Value::Table(list)]))
        });

        // take(cursors, max_records, max_bytes [, on_selected]) -> body (Kong's JSON shape), next_cursors,
        // count, behind, kafka_error. `cursors` is an array parallel to partitions(): the offset each
        // partition continues from, or a stream cursor (then next_cursors is the stream cursor after the
        // records, and a cursor refused is `nil, message, true`: see `Position`);
        // `on_selected(next_cursors, count)` runs between picking the records and rendering them (see `read`).
        method(
            methods,
            "take",
            |lua, this, (position, max_records, max_bytes, on_selected): (Position, usize, usize, Option<Function>)| {
                read(lua, this, &position, Limits { max_records, max_bytes }, Format::Kong, on_selected)
            },
        );

        // read(cursors, max_records, max_bytes) -> body (server-sent events), next_cursors, count, behind,
        // kafka_error; `cursors` as take's
        method(methods, "read", |lua, this, (position, max_records, max_bytes): (Position, usize, usize)| {
            read(lua, this, &position, Limits { max_records, max_bytes }, Format::Sse, None)
        });

        // frame(cursors, max_records, max_bytes) -> payload (one websocket text frame), next_cursors, count,
        // behind, kafka_error, sent: a read whose `sent[i]` lists the offsets of partition i it carries, as
        // runs `{first, last, first, last, ...}` of consecutive offsets (see offset_runs); `cursors` as take's
        method(methods, "frame", |lua, this, (position, max_records, max_bytes): (Position, usize, usize)| {
            read(lua, this, &position, Limits { max_records, max_bytes }, Format::WebSocket, None)
        });

        // records(cursors, max_records, max_bytes [, on_selected]) -> by_partition, next_cursors, count,
        // behind, kafka_error: a take (queue, replay) or read (broadcast) whose records come one by one
        // (see records_table); `cursors` as take's
        method(
            methods,
            "records",
            |lua, this, (position, max_records, max_bytes, on_selected): (Position, usize, usize, Option<Function>)| {
                read(lua, this, &position, Limits { max_records, max_bytes }, Format::Records, on_selected)
            },
        );

        // layout() -> the partition layout tag that starts this handle's stream cursors
        method(methods, "layout", |lua, this, ()| {
            let shared = match this.shared() {
                Ok(s) => s,
                Err(e) => return failure(lua, e),
            };
            let layout = layout_tag(&shared.state.lock().partitions);
            Ok(MultiValue::from_vec(vec![Value::String(lua.create_string(layout)?)]))
        });

        // bounds() -> { {from, next}, ... }: the offsets each partition's buffer holds every record of
        method(methods, "bounds", |lua, this, ()| {
            let shared = match this.shared() {
                Ok(s) => s,
                Err(e) => return failure(lua, e),
            };
            let state = shared.state.lock();
            let list = lua.create_table_with_capacity(state.partitions.len(), 0)?;
            for p in &state.partitions {
                let (from, next) = p.bounds();
                list.raw_push(lua.create_sequence_from([from, next])?)?;
            }
            Ok(MultiValue::from_vec(vec![Value::Table(list)]))
        });

        // cursor(cursors) -> the stream cursor (SSE event id) of `cursors` in this handle's layout: the
        // position an http-get cursor read answers with
        method(methods, "cursor", |lua, this, cursors: Vec<i64>| {
            let shared = match this.shared() {
                Ok(s) => s,
                Err(e) => return failure(lua, e),
            };
            let mut text = Vec::new();
            format_cursor(&layout_tag(&shared.state.lock().partitions), &cursors, &mut text);
            Ok(MultiValue::from_vec(vec![Value::String(lua.create_string(text)?)]))
        });

        // parse_cursor(text) -> cursors | nil, err: a stream cursor (SSE event id) of this handle's layout
        method(methods, "parse_cursor", |lua, this, text: mlua::LuaString| {
            let shared = match this.shared() {
                Ok(s) => s,
                Err(e) => return failure(lua, e),
            };
            match cursor_offsets(&shared.state.lock().partitions, &text) {
                Ok((offsets, _)) => Ok(MultiValue::from_vec(vec![Value::Table(lua.create_sequence_from(offsets)?)])),
                Err(e) => failure(lua, e),
            }
        });

        // commit(offsets): array parallel to partitions(), next offset to consume or false; asynchronous
        method(methods, "commit", |lua, this, offsets: Table| {
            let shared = match this.shared() {
                Ok(s) => s,
                Err(e) => return failure(lua, e),
            };
            let mut wanted = Vec::new();
            for pair in offsets.pairs::<usize, Value>() {
                let (index, value) = pair?;
                if let Value::Integer(offset) = value {
                    wanted.push((index - 1, offset));
                } else if let Value::Number(offset) = value {
                    wanted.push((index - 1, offset as i64));
                }
            }
            shared.state.lock().commits.extend(wanted);
            Ok(MultiValue::from_vec(vec![Value::Boolean(true)]))
        });

        // drain_log() -> { {level, message}, ... }
        method(methods, "drain_log", |lua, this, ()| {
            let shared = match this.shared() {
                Ok(s) => s,
                Err(e) => return failure(lua, e),
            };
            let lines: Vec<(Level, String)> = shared.state.lock().log.drain(..).collect();
            let list = lua.create_table_with_capacity(lines.len(), 0)?;
            for (level, text) in lines {
                let level = match level {
                    Level::Error => "err",
                    Level::Warn => "warn",
                    Level::Info => "info",
                };
                list.raw_push(lua.create_sequence_from([level, text.as_str()])?)?;
            }
            Ok(MultiValue::from_vec(vec![Value::Table(list)]))
        });

        method(methods, "doorbell_path", |lua, this, ()| lua.create_string(&this.doorbell_path));

        // close(): asynchronous and idempotent; the thread ends and closes its client on its own.
        method(methods, "close", |_, this, ()| {
            this.shared.close();
            Ok(true)
        });
    }
}

/// What Lua holds of a plugin configuration: its consumer settings, parsed and checked once, for
/// `new_consumer`.
impl UserData for Settings {}

/// `settings(conf [, plugin_name [, handover]]) -> settings, identity, group_id`: the consumer settings of
/// the configuration `conf` of the plugin `plugin_name` (`"confluent-consume"`, the default, or
/// `"kafka-consume"`: each is checked against its own fields), the table Kong hands to the plugin's
/// phases (its other keys, such as `__key__`, are ignored; see [`Settings::from_plugin_conf`]), with what
/// the plugin hands over beside it, `{consumer_group = <the Kong consumer's group>, certificate = {cert =,
/// key =}}` (see [`Handover`]); the identity of its consumer, equal for the configurations that share one
/// per worker ([`Settings::identity`]); and its Kafka consumer group.
///
/// # Errors
/// Returns `nil, message` naming the first invalid field: a value outside schema.lua's rules (the same
/// rules, [`schema::FIELDS`]), a combination its entity checks refuse, or `security.certificate_id`
/// without its certificate. Raises when `conf` is not a table, `plugin_name` is not one of the two names
/// or `handover` not of that shape (misuse).
///
/// # Panics
/// Never on purpose; a panic inside comes back as `nil, "internal error: …"` (see [`guard`]).
fn settings(
    lua: &Lua,
    (conf, plugin_name, handover): (Value, Option<String>, Option<Value>),
) -> LuaResult<MultiValue> {
    if !conf.is_table() {
        return Err(mlua::Error::runtime("settings expects the plugin's conf table"));
    }
    let plugin = plugin_of(plugin_name)?;
    let handover: Handover = match handover {
        Some(handover) => lua.from_value(handover)?,
        None => Handover::default(),
    };
    // a function or userdata under a key the settings ignore is no reason to refuse them
    let options = DeserializeOptions::new().deny_unsupported_types(false);
    let conf: serde_json::Value = match lua.from_value_with(conf, options) {
        Ok(conf) => conf,
        Err(e) => return failure(lua, Error::Config(e.to_string())),
    };
    match Settings::from_plugin_conf(&conf, plugin, handover) {
        Ok(settings) => {
            let identity = Value::String(lua.create_string(settings.identity())?);
            let group_id = Value::String(lua.create_string(&settings.group_id)?);
            Ok(MultiValue::from_vec(vec![Value::UserData(lua.create_userdata(settings)?), identity, group_id]))
        }
        Err(e) => failure(lua, e),
    }
}


/// `new_consumer(settings [, start])`: builds a handle from `settings(conf)` and starts its thread without
/// waiting for Kafka. Without `start`, the configuration's shared consumer (a queue for http-get, a
/// broadcast for server-sent-events); with `"live"`, a broadcast one whatever the mode (an http-get
/// route's cursor reads); with a table, a private replay consumer starting at `{kind = "earliest" |
/// "latest"}`, `{kind = "timestamp", ms = }` or `{kind = "offsets", offsets = {...}}`.
///
/// # Errors
/// Returns `nil, message` for an invalid `start`, a configuration librdkafka refuses, or a failure to
/// create the doorbell socket or the thread. Raises only when `settings` is not a settings object.
///
/// # Panics
/// Never on purpose; a panic inside comes back as `nil, "internal error: …"` (see [`guard`]).
fn new_consumer(lua: &Lua, (settings, start): (UserDataRef<Settings>, Option<Value>)) -> LuaResult<MultiValue> {
    let settings = match start {
        None => Ok(Settings::clone(&settings)),
        Some(Value::String(live)) if live.as_bytes().as_ref() == b"live" => Ok(settings.live()),
        Some(start) => match lua.from_value::<Start>(start) {
            Ok(start) => settings.replay(start),
            Err(e) => Err(Error::Config(format!("start: {e}"))),
        },
    };
    match settings.and_then(consumer::spawn) {
        Ok((shared, doorbell_path)) => {
            let handle = Handle { shared, doorbell_path, pid: std::process::id() };
            Ok(MultiValue::from_vec(vec![Value::UserData(lua.create_userdata(handle)?)]))
        }
        Err(e) => failure(lua, e),
    }
}

/// The plugin a Lua caller names; `None` is confluent-consume.
fn plugin_of(name: Option<String>) -> LuaResult<Plugin> {
    match name {
        None => Ok(Plugin::ConfluentConsume),
        Some(name) => Plugin::from_name(&name)
            .ok_or_else(|| mlua::Error::runtime(format!("unknown plugin name '{name}'"))),
    }
}

/// `config_fields([plugin_name])`: every field of the plugin's `config` as the native side checks it
/// (confluent-consume's by default, or kafka-consume's), keyed by path (`a.b`, `a[].b` for a field of
/// each element): `{type =, required =}` plus the schema.lua constraints `between`, `one_of`,
/// `not_one_of`, `len_min`, `len_max`, `match`, `custom_validator = "host"` and `uuid = true`.
/// spec/05-settings_spec.lua compares it with each plugin's schema.lua.
///
/// # Errors
/// Fails when Lua cannot allocate the tables; raises for an unknown plugin name.
fn config_fields(lua: &Lua, plugin_name: Option<String>) -> LuaResult<Table> {
    let plugin = plugin_of(plugin_name)?;
    let fields = lua.create_table_with_capacity(0, FIELDS.len())?;
    for field in plugin.fields() {
        let entry = lua.create_table_with_capacity(0, 2 + field.rules.len())?;
        entry.raw_set("type", field.kind.name())?;
        entry.raw_set("required", field.required)?;
        for rule in field.rules {
            match *rule {
                Rule::Between(lo, hi) => entry.raw_set("between", lua.create_sequence_from([lo, hi])?)?,
                Rule::BetweenNumbers(lo, hi) => entry.raw_set("between", lua.create_sequence_from([lo, hi])?)?,
                Rule::OneOf(values) => entry.raw_set("one_of", lua.create_sequence_from(values.iter().copied())?)?,
                Rule::NotOneOf(values) => {
                    entry.raw_set("not_one_of", lua.create_sequence_from(values.iter().copied())?)?
                }
                Rule::LenMin(n) => entry.raw_set("len_min", n)?,
                Rule::LenMax(n) => entry.raw_set("len_max", n)?,
                Rule::Match(pattern, _) => entry.raw_set("match", pattern)?,
                Rule::Host => entry.raw_set("custom_validator", "host")?,
                Rule::Uuid => entry.raw_set("uuid", true)?,
                Rule::LuaFunction => entry.raw_set("custom_validator", "lua_function")?,
            }
        }
        fields.raw_set(field.path, entry)?;
    }
    Ok(fields)
}

/// `parse_query(raw, conf [, last_event_id])`: the query arguments of a request for the plugin config
/// `conf` (its `mode` and bounds), from the raw query string; `last_event_id` is the request's
/// `Last-Event-ID` header. http-get: `{wait = ms, max_records =, max_bytes =}`, with `cursor` or `from`
/// for a cursor read; server-sent-events:
/// `{cursor = id}` or `{from = "earliest" | "latest" | ms}`; websocket: the same (or `from = "committed"`)
/// with `acks = true | false`. See [`query`].
///
/// # Errors
/// Returns `nil, message` for the client when an argument is invalid. Raises when `conf` lacks the
/// fields its mode needs (misuse).
fn parse_query(
    lua: &Lua,
    (raw, conf, last_event_id): (mlua::LuaString, Table, Option<mlua::LuaString>),
) -> LuaResult<MultiValue> {
    let mode: String = conf.get("mode")?;
    let mode = Mode::from_name(&mode).ok_or_else(|| mlua::Error::runtime(format!("unknown mode '{mode}'")))?;
    let bound = |name: &str| -> LuaResult<u64> {
        if mode == Mode::HttpGet {
            conf.get(name)
        } else {
            Ok(0)
        }
    };
    let auto_offset_reset = match (mode, conf.get::<Option<String>>("auto_offset_reset")?.as_deref()) {
        (Mode::HttpGet, _) => OffsetReset::Latest,
        (_, Some("earliest")) => OffsetReset::Earliest,
        (_, Some("latest")) => OffsetReset::Latest,
        (_, _) => return Err(mlua::Error::runtime("conf.auto_offset_reset is invalid")),
    }
    .effective(conf.get::<Option<bool>>("enforce_latest_offset_reset")?.unwrap_or(false));
    let config = QueryConfig {
        mode,
        max_wait: bound("max_wait")?,
        max_records: bound("max_records")?,
        max_bytes: bound("max_bytes")?,
        auto_offset_reset,
    };
    let header = last_event_id.as_ref().map(|h| h.as_bytes());
    let parsed = match query::parse(&raw.as_bytes(), &config, header.as_deref()) {
        Ok(parsed) => parsed,
        Err(message) => return failure(lua, message),
    };
    let args = lua.create_table_with_capacity(0, 3)?;
    let start = match parsed {
        Query::Get(limits) => {
            args.raw_set("wait", limits.wait_ms)?;
            args.raw_set("max_records", limits.max_records)?;
            args.raw_set("max_bytes", limits.max_bytes)?;
            limits.start
        }
        Query::Stream(start) => Some(start),
        Query::WebSocket { start, acks } => {
            args.raw_set("acks", acks)?;
            Some(start)
        }
    };
    match start {
        None => {}
        Some(StreamStart::Cursor(id)) => args.raw_set("cursor", lua.create_string(id)?)?,
        Some(StreamStart::Earliest) => args.raw_set("from", "earliest")?,
        Some(StreamStart::Latest) => args.raw_set("from", "latest")?,
        Some(StreamStart::Committed) => args.raw_set("from", "committed")?,
        Some(StreamStart::Timestamp(ms)) => args.raw_set("from", ms)?,
    }
    Ok(MultiValue::from_vec(vec![Value::Table(args)]))
}

/// `parse_client_frame(text)`: one websocket client frame (see [`client_frame`]): `{type = "ack", cursor =}`,
/// `{type = "ack", topic =, partition =, offset =}`, `{type = "pause"}` or `{type = "resume"}`.
///
/// # Errors
/// Returns `nil, reason` (fit for a close frame) for anything else.
fn parse_client_frame(lua: &Lua, text: mlua::LuaString) -> LuaResult<MultiValue> {
    let frame = match client_frame::parse(&text.as_bytes()) {
        Ok(frame) => frame,
        Err(why) => return failure(lua, why),
    };
    let out = lua.create_table_with_capacity(0, 4)?;
    match frame {
        ClientFrame::AckCursor(cursor) => {
            out.raw_set("type", "ack")?;
            out.raw_set("cursor", cursor)?;
        }
        ClientFrame::AckRecord { topic, partition, offset } => {
            out.raw_set("type", "ack")?;
            out.raw_set("topic", topic)?;
            out.raw_set("partition", partition)?;
            out.raw_set("offset", offset)?;
        }
        ClientFrame::Pause => out.raw_set("type", "pause")?,
        ClientFrame::Resume => out.raw_set("type", "resume")?,
    }
    Ok(MultiValue::from_vec(vec![Value::Table(out)]))
}

/// The module table: `version()`, `settings(conf)`, `new_consumer(settings [, start])`,
/// `parse_query(raw, conf, last_event_id)` and `config_fields()`.
///
/// # Errors
/// Fails only when Lua cannot allocate the table.
#[mlua::lua_module(name = "confluent_consume_native")]
fn module(lua: &Lua) -> LuaResult<Table> {
    let exports = lua.create_table()?;
    exports.set("version", function(lua, |_, ()| Ok(env!("CARGO_PKG_VERSION")))?)?;
    exports.set("settings", function(lua, settings)?)?;
    exports.set("new_consumer", function(lua, new_consumer)?)?;
    exports.set("parse_query", function(lua, parse_query)?)?;
    exports.set("parse_client_frame", function(lua, parse_client_frame)?)?;
    exports.set("max_client_frame_bytes", client_frame::MAX_FRAME_BYTES)?;
    exports.set("config_fields", function(lua, config_fields)?)?;
    exports.set("metrics", function(lua, metrics_snapshot)?)?;
    exports.set("render_metrics", function(lua, render_metrics)?)?;
    exports.set("merge_gauges", function(lua, merge_gauges)?)?;
    exports.set("metric_families", function(lua, metric_families)?)?;
    exports.set("count_record_ages", function(lua, |_, on: bool| {
        metrics::count_record_ages(on);
        Ok(())
    })?)?;
    #[cfg(feature = "fault-injection")]
    exports.set("inject_panic", function(lua, fault::inject_panic)?)?;
    Ok(exports)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `code` with the module table as `native` and Kong's `ngx.null` as `null`; the code asserts.
    fn run(code: &str) {
        let lua = Lua::new();
        lua.globals().set("native", module(&lua).unwrap()).unwrap();
        lua.globals().set("null", Value::NULL).unwrap();
        lua.load(code).exec().unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn parse_query_answers_a_table_or_nil_and_a_message() {
        run(r#"
            local get = { mode = "http-get", max_wait = 3000, max_records = 20, max_bytes = 1000 }
            local args = native.parse_query("wait=250&max_records=5&other=x", get)
            assert(args.wait == 250 and args.max_records == 5 and args.max_bytes == 1000)
            local none, err = native.parse_query("wait=1&wait=2", get)
            assert(none == nil and err == "wait must be given once, as an integer", err)
            local sse = { mode = "server-sent-events", auto_offset_reset = "earliest" }
            assert(native.parse_query("", sse).from == "earliest")
            -- latest is earliest unless enforced, as in Kong
            sse.auto_offset_reset = "latest"
            assert(native.parse_query("", sse).from == "earliest")
            sse.enforce_latest_offset_reset = true
            assert(native.parse_query("", sse).from == "latest")
            assert(native.parse_query("from=1700000000000", sse).from == 1700000000000)
            assert(native.parse_query("last_event_id=a%00b", sse).cursor == "a\0b")
            assert(native.parse_query("last_event_id=q", sse, "h").cursor == "h")
            local bad = { native.parse_query("from=soon", sse) }
            assert(bad[1] == nil and bad[2]:match("^from must be"), bad[2])
            -- misuse raises
            assert(not pcall(native.parse_query, "", { mode = "other" }))
            assert(not pcall(native.parse_query, "", { mode = "http-get" }))
        "#);
    }

    #[test]
    fn settings_refuse_a_bad_conf_with_a_message_naming_the_field() {
        run(r#"
            local s, err = native.settings({ topics = {} })
            assert(s == nil and err == "invalid configuration: bootstrap_servers: required field missing", err)
            s, err = native.settings({ bootstrap_servers = { { host = "h", port = 1 } }, topics = {} })
            assert(s == nil and err == "invalid configuration: topics: length must be at least 1", err)
            assert(not pcall(native.settings, "not a table"))
            -- misuse raises: new_consumer takes what settings() returned
            assert(not pcall(native.new_consumer, { topics = {} }))
        "#);
    }

    #[test]
    fn settings_read_a_conf_as_kong_hands_it_over() {
        run(r#"
            local conf = {
                bootstrap_servers = { { host = "127.0.0.1", port = 9092 } }, topics = { { name = "t" } },
                mode = "http-get", message_deserializer = "noop", auto_offset_reset = "latest",
                commit_strategy = "auto", timeout = 10000, cluster_name = null,
                enforce_latest_offset_reset = false, keepalive = 60000, keepalive_enabled = false,
                error_handling = { return_error_message = false },
                consumer_group = { mode = "random", consumer_group_id = null }, authentication = null,
                cluster_api_key = null, cluster_api_secret = null,
                security = { ssl = null, ssl_verify = true, ca_certificate = null, client_certificate = null,
                             client_key = null },
                max_records = 1000, max_bytes = 1048576, max_wait = 30000, heartbeat_interval = 15000,
                retry_interval = 3000, max_unacked_records = 1000, ack_timeout = 60000,
                max_catchup_streams = 16, fetch_wait_max_ms = 10,
                buffer_max_bytes = 8388608, max_consumer_groups = 16, __key__ = "k", __plugin_id = "p",
                __handler = function() end,
            }
            local s, identity, group_id = native.settings(conf)
            assert(s and #identity == 32 and group_id == "kong-confluent-consume-p", identity)
            conf.max_records = 5
            assert(select(2, native.settings(conf)) == identity)
            conf.fetch_wait_max_ms = 20
            assert(select(2, native.settings(conf)) ~= identity)
            local fields = native.config_fields()
            assert(fields["fetch_wait_max_ms"].between[2] == 10000 and fields["topics[].name"].len_max == 249)
            assert(fields.cluster_api_key and not native.config_fields("kafka-consume").cluster_api_key)
            assert(not pcall(native.config_fields, "kafka-upstream"))
            -- kafka-consume has no cluster_api_key (Kong refuses it as an unknown field)
            local bad = { native.settings(conf, "kafka-consume") }
            assert(bad[1] == nil and bad[2] == "invalid configuration: keepalive: unknown field", bad[2])
            conf.keepalive, conf.keepalive_enabled = nil, nil
            assert(select(2, native.settings(conf, "kafka-consume")) ~= nil)
            local h, err = native.new_consumer(s, { kind = "offsets", offsets = { -1 } })
            assert(h == nil and err:match("start.offsets"), err)
            -- a Kong consumer's group is handed over with the conf, in kong_consumer mode
            conf.keepalive, conf.keepalive_enabled = 60000, false
            conf.consumer_group.mode = "kong_consumer"
            assert(select(3, native.settings(conf)) == "kong-confluent-consume-p")
            assert(select(3, native.settings(conf, nil, { consumer_group = "alice" })) == "alice")
            assert(not pcall(native.settings, conf, nil, { consumer_group = {} }))
        "#);
    }
}
