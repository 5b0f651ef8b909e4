// The Node.js shim over libvxevents: one ObjectWrap per vx_events handle.
//
// Thin on purpose. Option defaults and argument validation live in lib/*.js; this file only
// converts normalized arguments, maps core error codes to JS errors (`.code` is
// vx_err_name()) and brings loop-thread callbacks back to the JS thread through one
// thread-safe function per instance. The core's loop runs on its own thread; nothing here
// touches Node's loop except through that thread-safe function.

#include <napi.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <deque>
#include <set>
#include <string>
#include <vector>

#include "vxevents.h"

namespace {

class Events;

// One pending loop-thread answer. Allocated on the JS thread, filled on the loop thread,
// consumed and freed on the JS thread (or freed unread when the environment is gone).
struct Op {
  enum Kind { kCount, kHas, kChannels, kJson, kStats, kClose, kConnect, kDisconnect, kClientEvent, kLog, kAuth, kStatus, kCapacity, kPublished } kind;
  napi_deferred deferred = nullptr;
  napi_threadsafe_function tsfn = nullptr;
  int status = 0;
  uint64_t count = 0;
  std::vector<std::string> names;
  std::string json;
  vx_stats stats{};
  // Hooks: socket id / channel / event / data (JSON) or log level + message.
  std::string a, b, c;
  // kAuth: the request id is in `count`, the kind in `status`; url, headers and body here.
  std::string url, headers, body;
};

// Per-environment state (no statics): the constructor and every open instance, so that a
// worker or the main environment shutting down frees what it still holds.
struct AddonData {
  Napi::FunctionReference ctor;
  std::set<Events*> live;
};

// The key's PEM text is not left in freed memory (a volatile store the compiler keeps).
void OPENSSL_cleanse_like(char* p, size_t n) {
  volatile char* v = p;
  while (n--) *v++ = 0;
}

Napi::Error VxError(Napi::Env env, int code) {
  Napi::Error err = Napi::Error::New(env, vx_strerror(code));
  err.Set("code", Napi::String::New(env, vx_err_name(code)));
  return err;
}


void Post(Op* op) {
  // Non-blocking: the loop thread must never wait for the JS thread (that would deadlock
  // with vx_free joining the loop thread). A refused call means the environment is going
  // away; the answer is then dropped.
  if (napi_call_threadsafe_function(op->tsfn, op, napi_tsfn_nonblocking) != napi_ok) delete op;
}

void OnCount(int status, uint64_t count, void* data) {
  Op* op = static_cast<Op*>(data);
  op->status = status;
  op->count = count;
  Post(op);
}

void OnChannels(int status, const char* const* names, size_t n, void* data) {
  Op* op = static_cast<Op*>(data);
  op->status = status;
  if (status == 0)
    for (size_t i = 0; i < n; i++) op->names.emplace_back(names[i]);
  Post(op);
}

void OnStatus(int status, const char* message, void* data) {
  Op* op = static_cast<Op*>(data);
  op->status = status;
  if (message) op->a = message;
  Post(op);
}

void OnJson(int status, const char* json, size_t len, void* data) {
  Op* op = static_cast<Op*>(data);
  op->status = status;
  if (status == 0 && json) op->json.assign(json, len);
  Post(op);
}

// vx_publish: the offset in `count`, the epoch in `a`.
void OnPublished(int status, uint64_t offset, const char* epoch, void* data) {
  Op* op = static_cast<Op*>(data);
  op->status = status;
  op->count = offset;
  if (epoch) op->a = epoch;
  Post(op);
}

void OnStats(int status, const vx_stats* stats, void* data) {
  Op* op = static_cast<Op*>(data);
  op->status = status;
  if (status == 0 && stats) op->stats = *stats;
  Post(op);
}

void OnCapacity(int status, void* data) {
  Op* op = static_cast<Op*>(data);
  op->status = status;
  Post(op);
}

void OnClosed(int status, uint64_t unpublished, void* data) {
  Op* op = static_cast<Op*>(data);
  op->status = status;
  op->count = unpublished;
  Post(op);
}

// Host hooks, on the loop thread. `hook_data` is the raw thread-safe function; every string
// is borrowed, so it is copied before the call is queued.
Op* HookOp(Op::Kind kind, void* hook_data) {
  Op* op = new Op();
  op->kind = kind;
  op->tsfn = static_cast<napi_threadsafe_function>(hook_data);
  return op;
}

void OnConnect(const char* socket_id, void* data) {
  Op* op = HookOp(Op::kConnect, data);
  op->a = socket_id;
  Post(op);
}

void OnDisconnect(const char* socket_id, void* data) {
  Op* op = HookOp(Op::kDisconnect, data);
  op->a = socket_id;
  Post(op);
}

void OnClientEvent(const char* socket_id, const char* channel, const char* event, const char* json,
                   size_t len, void* data) {
  Op* op = HookOp(Op::kClientEvent, data);
  op->a = socket_id;
  op->b = channel;
  op->c = event;
  if (json) op->json.assign(json, len);
  Post(op);
}

void OnAuthorize(const vx_auth_request* req, void* data) {
  Op* op = HookOp(Op::kAuth, data);
  op->count = req->id;
  op->status = req->kind;
  op->a = req->socket_id ? req->socket_id : "";
  op->b = req->channel ? req->channel : "";
  op->c = req->channel_type ? req->channel_type : "";
  op->url = req->url ? req->url : "";
  if (req->headers) op->headers.assign(req->headers, req->headers_len);
  if (req->body) op->body.assign(req->body, req->body_len);
  Post(op);
}

void OnLog(int level, const char* message, void* data) {
  Op* op = HookOp(Op::kLog, data);
  op->status = level;
  op->a = message;
  Post(op);
}

std::string Str(const Napi::Value& v) {
  return v.As<Napi::String>().Utf8Value();
}

// ---- options: the core's table, applied by name ------------------------------------

const char* TypeName(int type) {
  switch (type) {
    case VX_OPT_UINT: return "uint";
    case VX_OPT_SIZE: return "size";
    case VX_OPT_BOOL: return "bool";
    case VX_OPT_LEVEL: return "level";
    case VX_OPT_PATH: return "path";
    case VX_OPT_SECRET: return "secret";
    case VX_OPT_REDIS: return "redis";
    default: return "string";
  }
}

// Apply {name: text} with vx_options_set, in order; the first refusal stops it (its message
// in `err`). The texts are kept in `keep` (a deque: its elements never move) until vx_new.
int ApplySettings(const Napi::Value& v, vx_options* opts, std::deque<std::string>& keep, char* err,
                  size_t errlen) {
  if (!v.IsObject()) {
    snprintf(err, errlen, "settings must be an object");
    return VX_EINVAL;
  }
  Napi::Object settings = v.As<Napi::Object>();
  Napi::Array names = settings.GetPropertyNames();
  for (uint32_t i = 0; i < names.Length(); i++) {
    std::string name = names.Get(i).ToString().Utf8Value();
    Napi::Value value = settings.Get(name);
    if (!value.IsString()) {
      snprintf(err, errlen, "%s must be given as text to the core", name.c_str());
      return VX_EINVAL;
    }
    keep.push_back(Str(value));
    int r = vx_options_set(opts, name.c_str(), keep.back().c_str(), err, errlen);
    if (r < 0) return r;
  }
  return 0;
}

void Wipe(std::deque<std::string>& keep) {
  for (std::string& s : keep)
    if (!s.empty()) memset(&s[0], 0, s.size());
}

Napi::Error OptionError(Napi::Env env, int code, const char* message) {
  Napi::Error err = Napi::TypeError::New(env, std::string("vxevents: option ") + message);
  err.Set("code", Napi::String::New(env, vx_err_name(code)));
  return err;
}

// optionTable() -> [{name, node, python, type, min, max, default}]: the core's options table
// (lib/options.cjs validates against it; the tests check index.d.ts declares every row).
Napi::Value OptionTable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t n = 0;
  const vx_option_info* t = vx_option_table(&n);
  Napi::Array rows = Napi::Array::New(env, n);
  for (size_t i = 0; i < n; i++) {
    Napi::Object r = Napi::Object::New(env);
    r.Set("name", t[i].name);
    r.Set("node", t[i].node ? Napi::Value(Napi::String::New(env, t[i].node)) : env.Null());
    r.Set("python", t[i].python ? Napi::Value(Napi::String::New(env, t[i].python)) : env.Null());
    r.Set("flag", t[i].flag);
    r.Set("type", TypeName(t[i].type));
    r.Set("min", Napi::Number::New(env, (double)t[i].min));
    r.Set("max", Napi::Number::New(env, (double)t[i].max));
    Napi::Value def;
    switch (t[i].type) {
      case VX_OPT_UINT:
      case VX_OPT_SIZE:
      case VX_OPT_LEVEL:
        def = Napi::Number::New(env, (double)t[i].default_number);
        break;
      case VX_OPT_BOOL:
        def = Napi::Boolean::New(env, t[i].default_number != 0);
        break;
      default:
        def = t[i].default_string ? Napi::Value(Napi::String::New(env, t[i].default_string)) : env.Null();
    }
    r.Set("default", def);
    r.Set("help", t[i].help);
    rows.Set((uint32_t)i, r);
  }
  return rows;
}

// checkOptions({name: text}) -> null, or {code, message} from vx_options_set / vx_options_check:
// what `new Events` would refuse, found before any instance exists.
Napi::Value CheckOptions(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  vx_options opts;
  vx_options_init(&opts);
  std::deque<std::string> keep;
  char err[512] = "";
  int r = ApplySettings(info[0], &opts, keep, err, sizeof err);
  if (r == 0) r = vx_options_check(&opts, err, sizeof err);
  Wipe(keep);
  if (r == 0) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("code", vx_err_name(r));
  o.Set("message", err);
  return o;
}

// socketIdValid(id) -> the core's rule for a socket id (what vx_sign accepts).
Napi::Value SocketIdValid(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) return Napi::Boolean::New(env, false);
  std::string id = Str(info[0]);
  return Napi::Boolean::New(env, vx_socket_id_valid(id.data(), id.size()) != 0);
}

class Events : public Napi::ObjectWrap<Events> {
 public:
  static void CallJs(Napi::Env env, Napi::Function, Events* self, Op* op);
  using Tsfn = Napi::TypedThreadSafeFunction<Events, Op, CallJs>;

  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Events",
                       {
                           InstanceMethod<&Events::Listen>("listen"),
                           InstanceMethod<&Events::ConfigureTls>("configureTls"),
                           InstanceMethod<&Events::Adopt>("adopt"),
                           InstanceMethod<&Events::Broadcast>("broadcast"),
                           InstanceMethod<&Events::BroadcastMany>("broadcastMany"),
                           InstanceMethod<&Events::Capacity>("capacity"),
                           InstanceMethod<&Events::SubscriberCount>("subscriberCount"),
                           InstanceMethod<&Events::HasSubscribers>("hasSubscribers"),
                           InstanceMethod<&Events::Channels>("channels"),
                           InstanceMethod<&Events::PresenceMembers>("presenceMembers"),
                           InstanceMethod<&Events::Stats>("stats"),
                           InstanceMethod<&Events::Metrics>("metrics"),
                           InstanceMethod<&Events::Publish>("publish"),
                           InstanceMethod<&Events::History>("history"),
                           InstanceMethod<&Events::Sign>("sign"),
                           InstanceMethod<&Events::AuthReply>("authReply"),
                           InstanceMethod<&Events::Close>("close"),
                           InstanceMethod<&Events::SseSubscribe>("sseSubscribe"),
                       });
  }

  // new Events({settings: {name: text}, onConnect, ..., onLog}) — built by lib/options.cjs.
  // Every core option is applied by its table name through vx_options_set, so the bounds,
  // the defaults and the error text are the core's.
  explicit Events(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Events>(info) {
    Napi::Env env = info.Env();
    vx_options opts;
    vx_options_init(&opts);
    Napi::Object o = info[0].As<Napi::Object>();
    std::deque<std::string> keep;  // the values vx_options_set borrows, until vx_new copies them
    char err[512];
    int bad = o.Has("settings") ? ApplySettings(o.Get("settings"), &opts, keep, err, sizeof err) : 0;
    if (bad < 0) {
      Wipe(keep);
      OptionError(env, bad, err).ThrowAsJavaScriptException();
      return;
    }

    // The thread-safe function exists before the core so hooks can use it from the start.
    tsfn_ = Tsfn::New(env, "vxevents", 0, 1, this);
    has_tsfn_ = true;
    // Unreferenced while nothing is pending, so an idle instance never keeps the process
    // alive by itself; each pending query references it (see Begin/End).
    tsfn_.Unref(env);
    opts.hook_data = static_cast<napi_threadsafe_function>(tsfn_);
    // Hooks (JS functions, wrapped in lib/ so they never throw) are wired only when given,
    // so an app without them pays nothing per connection.
    if (o.Has("onConnect") && o.Get("onConnect").IsFunction()) {
      on_connect_ = Napi::Persistent(o.Get("onConnect").As<Napi::Function>());
      opts.on_connect = OnConnect;
    }
    if (o.Has("onDisconnect") && o.Get("onDisconnect").IsFunction()) {
      on_disconnect_ = Napi::Persistent(o.Get("onDisconnect").As<Napi::Function>());
      opts.on_disconnect = OnDisconnect;
    }
    if (o.Has("onClientEvent") && o.Get("onClientEvent").IsFunction()) {
      on_client_event_ = Napi::Persistent(o.Get("onClientEvent").As<Napi::Function>());
      opts.on_client_event = OnClientEvent;
    }
    if (o.Has("onAuthorize") && o.Get("onAuthorize").IsFunction()) {
      on_authorize_ = Napi::Persistent(o.Get("onAuthorize").As<Napi::Function>());
      opts.authorize = OnAuthorize;
    }
    if (o.Has("onLog") && o.Get("onLog").IsFunction()) {
      on_log_ = Napi::Persistent(o.Get("onLog").As<Napi::Function>());
      opts.on_log = OnLog;
    }
    int r = vx_new(&ev_, &opts);
    // The strings (the secret among them) are copied by vx_new; do not keep a second copy in
    // this process's heap.
    Wipe(keep);
    if (r < 0) {
      ev_ = nullptr;
      has_tsfn_ = false;
      tsfn_.Release();
      VxError(env, r).ThrowAsJavaScriptException();
      return;
    }
    env.GetInstanceData<AddonData>()->live.insert(this);
  }

  ~Events() override {
    // Reached only when no query is pending (each holds a reference to this object).
    FreeCore();
    if (has_tsfn_) {
      tsfn_.Abort();
      has_tsfn_ = false;
    }
  }

  // Environment teardown: free the core (joins its thread) and let go of the thread-safe
  // function, so nothing outlives the environment and the finalizer has nothing left to do.
  void Teardown() {
    FreeCore();
    if (has_tsfn_) {
      has_tsfn_ = false;
      tsfn_.Abort();
    }
  }

  void FreeCore() {
    if (ev_) {
      vx_free(ev_);
      ev_ = nullptr;
    }
    // No hook can run any more; drop the functions (they may reference this object's owner).
    on_connect_.Reset();
    on_disconnect_.Reset();
    on_client_event_.Reset();
    on_log_.Reset();
    on_authorize_.Reset();
    AddonData* d = Env().GetInstanceData<AddonData>();
    if (d) d->live.erase(this);
  }

 private:
  bool Ready(Napi::Env env) {
    if (ev_ && !closing_) return true;
    VxError(env, VX_ECLOSED).ThrowAsJavaScriptException();
    return false;
  }

  // Start a query: a promise, a reference keeping this object alive and the thread-safe
  // function referenced until the answer comes back.
  Op* Begin(Napi::Env env, Op::Kind kind, napi_value* promise) {
    Op* op = new Op();
    op->kind = kind;
    op->tsfn = static_cast<napi_threadsafe_function>(tsfn_);
    napi_create_promise(env, &op->deferred, promise);
    if (pending_++ == 0) tsfn_.Ref(env);
    Ref();
    return op;
  }

  void End(Napi::Env env) {
    if (--pending_ == 0 && has_tsfn_) tsfn_.Unref(env);
    Unref();
  }

  // A query the core refused synchronously: its callback will never run.
  void Refused(Napi::Env env, Op* op, int r) {
    napi_reject_deferred(env, op->deferred, VxError(env, r).Value());
    End(env);
    delete op;
  }

  void Complete(Napi::Env env, Op* op) {
    Napi::HandleScope scope(env);
    switch (op->kind) {
      case Op::kConnect:
        if (!on_connect_.IsEmpty()) on_connect_.Call({Napi::String::New(env, op->a)});
        return;
      case Op::kDisconnect:
        if (!on_disconnect_.IsEmpty()) on_disconnect_.Call({Napi::String::New(env, op->a)});
        return;
      case Op::kClientEvent:
        if (!on_client_event_.IsEmpty())
          on_client_event_.Call({Napi::String::New(env, op->a), Napi::String::New(env, op->b),
                                 Napi::String::New(env, op->c), Napi::String::New(env, op->json)});
        return;
      case Op::kAuth:
        if (!on_authorize_.IsEmpty()) {
          Napi::Object r = Napi::Object::New(env);
          r.Set("id", Napi::Number::New(env, (double)op->count));
          r.Set("kind", Napi::String::New(env, op->status == VX_AUTH_SUBSCRIBE ? "subscribe" : "token"));
          r.Set("socketId", Napi::String::New(env, op->a));
          r.Set("channel", Napi::String::New(env, op->b));
          r.Set("channelType", Napi::String::New(env, op->c));
          r.Set("url", Napi::String::New(env, op->url));
          r.Set("headers", Napi::String::New(env, op->headers));
          r.Set("body", Napi::String::New(env, op->body));
          on_authorize_.Call({r});
        }
        return;
      case Op::kLog:
        if (!on_log_.IsEmpty()) on_log_.Call({Napi::Number::New(env, op->status), Napi::String::New(env, op->a)});
        return;
      default:
        break;
    }
    if (op->kind == Op::kClose) {
      // The loop thread has finished; joining it here is brief.
      FreeCore();
      if (op->status < 0) {
        // Broadcasts accepted before close that never reached Redis: say how many.
        char text[160];
        snprintf(text, sizeof text, "vxevents: %llu broadcast%s accepted before close %s not published to Redis (%s)",
                 (unsigned long long)op->count, op->count == 1 ? "" : "s", op->count == 1 ? "was" : "were",
                 "Redis unreachable or not answering within the grace period, or refused");
        Napi::Error err = Napi::Error::New(env, text);
        err.Set("code", Napi::String::New(env, vx_err_name(op->status)));
        err.Set("unpublished", Napi::Number::New(env, (double)op->count));
        napi_reject_deferred(env, op->deferred, err.Value());
      } else {
        napi_resolve_deferred(env, op->deferred, env.Undefined());
      }
      End(env);
      if (has_tsfn_) {
        has_tsfn_ = false;
        tsfn_.Release();
      }
      return;
    }
    if (op->kind == Op::kStatus) {
      // Resolves with {code, message}: the caller maps the outcome to an HTTP answer.
      Napi::Object o = Napi::Object::New(env);
      o.Set("code", Napi::String::New(env, vx_err_name(op->status)));
      o.Set("message", Napi::String::New(env, op->a));
      napi_resolve_deferred(env, op->deferred, o);
      End(env);
      return;
    }
    if (op->status < 0) {
      napi_reject_deferred(env, op->deferred, VxError(env, op->status).Value());
      End(env);
      return;
    }
    napi_value v;
    switch (op->kind) {
      case Op::kCount:
        v = Napi::Number::New(env, (double)op->count);
        break;
      case Op::kHas:
        v = Napi::Boolean::New(env, op->count != 0);
        break;
      case Op::kChannels: {
        Napi::Array a = Napi::Array::New(env, op->names.size());
        for (size_t i = 0; i < op->names.size(); i++) a.Set((uint32_t)i, op->names[i]);
        v = a;
        break;
      }
      case Op::kJson:
        v = Napi::String::New(env, op->json);
        break;
      case Op::kPublished: {
        Napi::Object o = Napi::Object::New(env);
        o.Set("offset", (double)op->count);
        o.Set("epoch", op->a);
        v = o;
        break;
      }
      case Op::kStats: {
        Napi::Object s = Napi::Object::New(env);
        s.Set("connections", (double)op->stats.connections);
        s.Set("channels", (double)op->stats.channels);
        s.Set("messagesDelivered", (double)op->stats.messages_delivered);
        s.Set("bytesWritten", (double)op->stats.bytes_written);
        s.Set("slowConsumerCloses", (double)op->stats.slow_consumer_closes);
        s.Set("pingTimeouts", (double)op->stats.ping_timeouts);
        s.Set("rejectedConnections", (double)op->stats.rejected_connections);
        s.Set("flowPausedMs", (double)op->stats.flow_paused_ms);
        s.Set("flowWaitMs", (double)op->stats.flow_wait_ms);
        s.Set("flowWaits", (double)op->stats.flow_waits);
        s.Set("flowRefused", (double)op->stats.flow_refused);
        s.Set("flowLagging", (double)op->stats.flow_lagging);
        s.Set("commandQueueBytes", (double)op->stats.command_queue_bytes);
        s.Set("unsentBytes", (double)op->stats.unsent_bytes);
        s.Set("tlsErrors", (double)op->stats.tls_errors);
        s.Set("historyBytes", (double)op->stats.history_bytes);
        s.Set("historyStreams", (double)op->stats.history_streams);
        v = s;
        break;
      }
      default:
        v = env.Undefined();
    }
    napi_resolve_deferred(env, op->deferred, v);
    End(env);
  }

  // listen(host, port) -> bound port. Blocks only until the loop thread has bound.
  Napi::Value Listen(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Ready(env)) return env.Undefined();
    std::string host = Str(info[0]);
    int port = info[1].As<Napi::Number>().Int32Value();
    int bound = 0;
    int r = vx_listen(ev_, host.c_str(), port, &bound);
    if (r < 0) {
      VxError(env, r).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    return Napi::Number::New(env, bound);
  }

  // configureTls(cert, key, ca | null): PEM text or file paths, before listen. Throws with
  // the core's reason (code ETLS) when they cannot be used.
  Napi::Value ConfigureTls(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Ready(env)) return env.Undefined();
    std::string cert = Str(info[0]), key = Str(info[1]);
    bool has_ca = info.Length() > 2 && info[2].IsString();
    std::string ca = has_ca ? Str(info[2]) : std::string();
    char err[512] = {0};
    int r = vx_tls_configure(ev_, cert.c_str(), key.c_str(), has_ca ? ca.c_str() : nullptr, err, sizeof err);
    if (!key.empty()) OPENSSL_cleanse_like(&key[0], key.size());
    if (r < 0) {
      Napi::Error e = Napi::Error::New(env, std::string("vxevents: listen.tls: ") + err);
      e.Set("code", Napi::String::New(env, vx_err_name(r)));
      e.ThrowAsJavaScriptException();
    }
    return env.Undefined();
  }

  // adopt(fd, bytes): the core gets its own duplicate of `fd` (Node keeps and later closes
  // the original) together with the bytes Node already read from it.
  Napi::Value Adopt(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Ready(env)) return env.Undefined();
    int fd = info[0].As<Napi::Number>().Int32Value();
    Napi::Buffer<char> bytes = info[1].As<Napi::Buffer<char>>();
    int copy = dup(fd);
    if (copy < 0) {
      Napi::Error err = Napi::Error::New(env, std::string("dup: ") + strerror(errno));
      err.Set("code", Napi::String::New(env, "EIO"));
      err.ThrowAsJavaScriptException();
      return env.Undefined();
    }
    int r = vx_adopt(ev_, copy, bytes.Data(), bytes.Length());
    if (r == VX_EINVAL) close(copy);  // only then is the fd not taken
    if (r < 0) VxError(env, r).ThrowAsJavaScriptException();
    return env.Undefined();
  }

  // broadcast(channel, event, dataJson | null, exceptId | null)
  Napi::Value Broadcast(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Ready(env)) return env.Undefined();
    std::string channel = Str(info[0]), event = Str(info[1]);
    std::string data, except;
    bool has_data = info[2].IsString(), has_except = info[3].IsString();
    if (has_data) data = Str(info[2]);
    if (has_except) except = Str(info[3]);
    int r = vx_broadcast(ev_, channel.c_str(), event.c_str(), has_data ? data.data() : nullptr,
                         data.size(), has_except ? except.c_str() : nullptr);
    if (r == VX_EAGAIN) return Napi::Boolean::New(env, false);  // no capacity: wait, try again
    if (r < 0) VxError(env, r).ThrowAsJavaScriptException();
    return Napi::Boolean::New(env, true);
  }

  // capacity() -> Promise resolved once the core's command queue has room again (rejected
  // with ECLOSED when the instance closes first).
  Napi::Value Capacity(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Ready(env)) return env.Undefined();
    napi_value promise;
    Op* op = Begin(env, Op::kCapacity, &promise);
    int r = vx_on_capacity(ev_, OnCapacity, op);
    if (r < 0) Refused(env, op, r);
    return Napi::Value(env, promise);
  }

  // broadcastMany(channels[], event, dataJson | null, exceptId | null)
  Napi::Value BroadcastMany(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Ready(env)) return env.Undefined();
    Napi::Array arr = info[0].As<Napi::Array>();
    std::vector<std::string> names(arr.Length());
    std::vector<const char*> ptrs(arr.Length());
    for (uint32_t i = 0; i < arr.Length(); i++) {
      names[i] = Str(arr.Get(i));
      ptrs[i] = names[i].c_str();
    }
    std::string event = Str(info[1]), data, except;
    bool has_data = info[2].IsString(), has_except = info[3].IsString();
    if (has_data) data = Str(info[2]);
    if (has_except) except = Str(info[3]);
    int r = vx_broadcast_many(ev_, ptrs.data(), ptrs.size(), event.c_str(),
                              has_data ? data.data() : nullptr, data.size(),
                              has_except ? except.c_str() : nullptr);
    if (r == VX_EAGAIN) return Napi::Boolean::New(env, false);
    if (r < 0) VxError(env, r).ThrowAsJavaScriptException();
    return Napi::Boolean::New(env, true);
  }

  Napi::Value SubscriberCount(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Ready(env)) return env.Undefined();
    std::string channel = Str(info[0]);
    napi_value promise;
    Op* op = Begin(env, Op::kCount, &promise);
    int r = vx_subscriber_count(ev_, channel.c_str(), OnCount, op);
    if (r < 0) Refused(env, op, r);
    return Napi::Value(env, promise);
  }

  Napi::Value HasSubscribers(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Ready(env)) return env.Undefined();
    std::string channel = Str(info[0]);
    napi_value promise;
    Op* op = Begin(env, Op::kHas, &promise);
    int r = vx_has_subscribers(ev_, channel.c_str(), OnCount, op);
    if (r < 0) Refused(env, op, r);
    return Napi::Value(env, promise);
  }

  Napi::Value Channels(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Ready(env)) return env.Undefined();
    napi_value promise;
    Op* op = Begin(env, Op::kChannels, &promise);
    int r = vx_channels(ev_, OnChannels, op);
    if (r < 0) Refused(env, op, r);
    return Napi::Value(env, promise);
  }

  // presenceMembers(channel) -> Promise<string> (JSON text; parsed in lib/).
  Napi::Value PresenceMembers(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Ready(env)) return env.Undefined();
    std::string channel = Str(info[0]);
    napi_value promise;
    Op* op = Begin(env, Op::kJson, &promise);
    int r = vx_presence_members(ev_, channel.c_str(), OnJson, op);
    if (r < 0) Refused(env, op, r);
    return Napi::Value(env, promise);
  }

  // publish(channel, event, dataJson | null, exceptId | null) -> Promise<{offset, epoch}>,
  // settled once the offset is assigned (DESIGN §12), or false when the core has no
  // capacity now (flow control, as broadcast()).
  Napi::Value Publish(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Ready(env)) return env.Undefined();
    std::string channel = Str(info[0]), event = Str(info[1]);
    std::string data, except;
    bool has_data = info[2].IsString(), has_except = info[3].IsString();
    if (has_data) data = Str(info[2]);
    if (has_except) except = Str(info[3]);
    napi_value promise;
    Op* op = Begin(env, Op::kPublished, &promise);
    int r = vx_publish(ev_, channel.c_str(), event.c_str(), has_data ? data.data() : nullptr,
                       data.size(), has_except ? except.c_str() : nullptr, OnPublished, op);
    if (r == VX_EAGAIN) {  // no capacity: false, as broadcast(); lib/ waits and tries again
      napi_resolve_deferred(env, op->deferred, env.Undefined());
      End(env);
      delete op;
      return Napi::Boolean::New(env, false);
    }
    if (r < 0) Refused(env, op, r);
    return Napi::Value(env, promise);
  }

  // history(channel, since, limit) -> Promise<string> (JSON text; parsed in lib/).
  Napi::Value History(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Ready(env)) return env.Undefined();
    std::string channel = Str(info[0]);
    double since = info[1].As<Napi::Number>().DoubleValue();
    double limit = info[2].As<Napi::Number>().DoubleValue();
    napi_value promise;
    Op* op = Begin(env, Op::kJson, &promise);
    int r = vx_history(ev_, channel.c_str(), (uint64_t)since, (uint32_t)limit, OnJson, op);
    if (r < 0) Refused(env, op, r);
    return Napi::Value(env, promise);
  }

  // sseSubscribe(connectionId, channel, memberJson|null, subscribe) -> Promise<{code, message}>
  Napi::Value SseSubscribe(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Ready(env)) return env.Undefined();
    std::string id = Str(info[0]), channel = Str(info[1]);
    bool has_member = info[2].IsString();
    std::string member = has_member ? Str(info[2]) : std::string();
    bool subscribe = info[3].ToBoolean().Value();
    napi_value promise;
    Op* op = Begin(env, Op::kStatus, &promise);
    int r = subscribe ? vx_sse_subscribe(ev_, id.c_str(), channel.c_str(),
                                         has_member ? member.c_str() : nullptr, OnStatus, op)
                      : vx_sse_unsubscribe(ev_, id.c_str(), channel.c_str(), OnStatus, op);
    if (r < 0) Refused(env, op, r);
    return Napi::Value(env, promise);
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Ready(env)) return env.Undefined();
    napi_value promise;
    Op* op = Begin(env, Op::kStats, &promise);
    int r = vx_stats_get(ev_, OnStats, op);
    if (r < 0) Refused(env, op, r);
    return Napi::Value(env, promise);
  }

  // metrics() -> Promise<string>: the Prometheus text GET /metrics serves.
  Napi::Value Metrics(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Ready(env)) return env.Undefined();
    napi_value promise;
    Op* op = Begin(env, Op::kJson, &promise);
    int r = vx_metrics(ev_, OnJson, op);
    if (r < 0) Refused(env, op, r);
    return Napi::Value(env, promise);
  }

  // sign(socketId, channel, channelData | null) -> "socketId:hex". Synchronous.
  Napi::Value Sign(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Ready(env)) return env.Undefined();
    std::string socket_id = Str(info[0]), channel = Str(info[1]), channel_data;
    bool has_cd = info[2].IsString();
    if (has_cd) channel_data = Str(info[2]);
    std::vector<char> out(socket_id.size() + 200 + 66 + 1);
    int r = vx_sign(ev_, socket_id.c_str(), channel.c_str(), has_cd ? channel_data.c_str() : nullptr,
                    out.data(), out.size());
    if (r < 0) {
      VxError(env, r).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    return Napi::String::New(env, out.data(), (size_t)r);
  }

  // authReply(id, authorized, memberJson | null, error | null): answers an onAuthorize call.
  Napi::Value AuthReply(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!ev_) return env.Undefined();  // closed: the pending request is gone with it
    uint64_t id = (uint64_t)info[0].As<Napi::Number>().Int64Value();
    bool authorized = info[1].ToBoolean().Value();
    std::string member, error;
    bool has_member = info[2].IsString(), has_error = info[3].IsString();
    if (has_member) member = Str(info[2]);
    if (has_error) error = Str(info[3]);
    int r = vx_auth_reply(ev_, id, authorized ? 1 : 0, has_member ? member.c_str() : nullptr,
                          has_error ? error.c_str() : nullptr);
    if (r < 0 && r != VX_ECLOSED) VxError(env, r).ThrowAsJavaScriptException();
    return env.Undefined();
  }

  // close(graceMs) -> Promise<void>: clients get 1001, broadcasts still held for Redis are
  // published first; the handle is freed once the loop thread is done. Rejects (code
  // EUNPUBLISHED, .unpublished) when some could not be. Idempotence is handled in lib/.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    napi_value promise;
    if (!ev_ || closing_) {
      napi_deferred d;
      napi_create_promise(env, &d, &promise);
      napi_resolve_deferred(env, d, env.Undefined());
      return Napi::Value(env, promise);
    }
    uint32_t grace = info[0].IsNumber() ? info[0].As<Napi::Number>().Uint32Value() : 0;
    Op* op = Begin(env, Op::kClose, &promise);
    int r = vx_shutdown(ev_, grace, OnClosed, op);
    if (r < 0) {
      Refused(env, op, r);
      return Napi::Value(env, promise);
    }
    closing_ = true;
    return Napi::Value(env, promise);
  }

  vx_events* ev_ = nullptr;
  Napi::FunctionReference on_connect_, on_disconnect_, on_client_event_, on_log_, on_authorize_;
  Tsfn tsfn_;
  bool has_tsfn_ = false;
  bool closing_ = false;
  uint32_t pending_ = 0;
};

void Events::CallJs(Napi::Env env, Napi::Function, Events* self, Op* op) {
  // env is null when the environment is being torn down: the answer has nowhere to go.
  if (env != nullptr && self != nullptr) self->Complete(env, op);
  delete op;
}

void Cleanup(void* arg) {
  AddonData* d = static_cast<AddonData*>(arg);
  std::set<Events*> live = d->live;
  for (Events* e : live) e->Teardown();
}

Napi::Value ErrName(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), vx_err_name(info[0].As<Napi::Number>().Int32Value()));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  AddonData* d = new AddonData();
  env.SetInstanceData(d);
  napi_add_env_cleanup_hook(env, Cleanup, d);
  Napi::Function ctor = Events::Init(env);
  d->ctor = Napi::Persistent(ctor);
  exports.Set("Events", ctor);
  exports.Set("errName", Napi::Function::New<ErrName>(env, "errName"));
  exports.Set("optionTable", Napi::Function::New<OptionTable>(env, "optionTable"));
  exports.Set("checkOptions", Napi::Function::New<CheckOptions>(env, "checkOptions"));
  exports.Set("socketIdValid", Napi::Function::New<SocketIdValid>(env, "socketIdValid"));
  exports.Set("version", Napi::String::New(env, VX_VERSION_STRING));
  return exports;
}

}  // namespace

NODE_API_MODULE(vxevents, Init)
