/* vxevents._core — the CPython face of libvxevents.
 *
 * Thin on purpose: validation, defaults and JSON live in the Python package
 * (vxevents/__init__.py); this file converts arguments, releases the GIL while a thread
 * waits on the loop thread's answer, and brings loop-thread callbacks back into Python
 * under the GIL without ever letting a Python exception escape into C.
 *
 * Multi-phase init, module state and a heap type (Core), after CPython's _sqlite/_json.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "vxevents.h"

#if PY_VERSION_HEX >= 0x030D0000
#define vxpy_finalizing() Py_IsFinalizing()
#else
#define vxpy_finalizing() _Py_IsFinalizing()
#endif

typedef struct {
  PyObject *VxError;       /* base class; .code = vx_err_name(), .errno = the number */
  PyObject *VxValueError;  /* bad argument (also a ValueError) */
  PyObject *VxClosedError; /* instance closed */
  PyTypeObject *CoreType;
} core_state;

typedef struct {
  PyObject_HEAD vx_events *ev;
  PyObject *authorize;    /* dispatcher called under the GIL from the loop thread, or NULL */
  PyObject *log;          /* log(level, message) under the GIL from the loop thread, or NULL */
  PyObject *client_event; /* client_event(socket_id, channel, event, data_bytes), or NULL */
  atomic_int closing;     /* set before close; hooks then stop entering Python */
  int closed;             /* close() completed (GIL-protected) */
  PyObject *weakreflist;
} CoreObject;

/* ---- errors -------------------------------------------------------------------- */

static PyObject *exc_from_code(core_state *st, int code, const char *detail) {
  PyObject *type = st->VxError;
  if (code == VX_EINVAL || code == VX_ECHANNEL || code == VX_EJSON || code == VX_ESECRET ||
      code == VX_ETOOBIG || code == VX_ETLS)
    type = st->VxValueError;
  else if (code == VX_ECLOSED)
    type = st->VxClosedError;
  const char *name = vx_err_name(code), *text = vx_strerror(code);
  PyObject *exc =
      detail ? PyObject_CallFunction(type, "s", detail) : PyObject_CallFunction(type, "s", text);
  if (!exc)
    return NULL;
  PyObject *pyname = PyUnicode_FromString(name);
  PyObject *pynum = PyLong_FromLong(code);
  if (!pyname || !pynum || PyObject_SetAttrString(exc, "code", pyname) < 0 ||
      PyObject_SetAttrString(exc, "errno", pynum) < 0) {
    Py_XDECREF(pyname);
    Py_XDECREF(pynum);
    Py_DECREF(exc);
    return NULL;
  }
  Py_DECREF(pyname);
  Py_DECREF(pynum);
  return exc;
}

/* The one place core codes become Python exceptions. Always returns NULL. */
static PyObject *raise_from_code(core_state *st, int code) {
  PyObject *exc = exc_from_code(st, code, NULL);
  if (exc) {
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
  }
  return NULL;
}

static core_state *state_of(CoreObject *self) {
  return (core_state *)PyType_GetModuleState(Py_TYPE(self));
}

static int check_open(CoreObject *self) {
  if (self->ev && !self->closed && !atomic_load(&self->closing))
    return 0;
  raise_from_code(state_of(self), VX_ECLOSED);
  return -1;
}

/* ---- queries: one pending record per call ------------------------------------------
 * A synchronous call keeps the record on its stack and waits on the condition with the
 * GIL released; an asynchronous call heap-allocates it and the loop thread calls the
 * Python callback with the value (or an exception instance). The core guarantees the
 * callback runs exactly once, so the record is always released. */

typedef struct pending {
  CoreObject *owner;  /* strong reference: keeps the instance alive while waiting */
  PyObject *callback; /* strong reference, NULL for a synchronous call */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done;
  int is_error;
  PyObject *result; /* new reference handed to the waiter */
} pending;

static pending *pending_new(CoreObject *owner, PyObject *callback) {
  pending *p = PyMem_RawCalloc(1, sizeof(*p));
  if (!p) {
    PyErr_NoMemory();
    return NULL;
  }
  Py_INCREF(owner);
  p->owner = owner;
  Py_INCREF(callback);
  p->callback = callback;
  return p;
}

/* Runs on the loop thread holding the GIL. `value` is a new reference, or NULL with a
 * Python error set (a conversion failed). Consumes everything. */
static void pending_finish(pending *p, PyObject *value, int is_error) {
  if (!value) {
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    value = v ? v : Py_NewRef(Py_None);
    is_error = v != NULL;
  }
  if (p->callback) {
    PyObject *r = PyObject_CallOneArg(p->callback, value);
    if (!r)
      PyErr_WriteUnraisable(p->callback);
    Py_XDECREF(r);
    Py_DECREF(value);
    Py_DECREF(p->callback);
    Py_DECREF(p->owner);
    PyMem_RawFree(p);
    return;
  }
  pthread_mutex_lock(&p->mu);
  p->result = value;
  p->is_error = is_error;
  p->done = 1;
  pthread_cond_signal(&p->cv);
  pthread_mutex_unlock(&p->mu);
}

/* Set on every core loop thread the first time it enters Python: a Core whose last
 * reference goes away on such a thread must not be freed there (vx_free joins the loop
 * thread), see Core_dealloc. */
static _Thread_local int on_loop_thread;

/* Loop thread: enter Python, or give up quietly when the interpreter is going away (a
 * thread taking the GIL during finalization would be stopped where it stands). */
static int enter_python(PyGILState_STATE *g) {
  on_loop_thread = 1;
  if (vxpy_finalizing())
    return 0;
  *g = PyGILState_Ensure();
  return 1;
}

static void on_count(int status, uint64_t count, void *data, int as_bool) {
  pending *p = data;
  PyGILState_STATE g;
  if (!enter_python(&g))
    return;
  if (status < 0)
    pending_finish(p, exc_from_code(state_of(p->owner), status, NULL), 1);
  else
    pending_finish(p, as_bool ? PyBool_FromLong(count != 0) : PyLong_FromUnsignedLongLong(count),
                   0);
  PyGILState_Release(g);
}
static void on_count_int(int status, uint64_t count, void *data) {
  on_count(status, count, data, 0);
}
static void on_count_bool(int status, uint64_t count, void *data) {
  on_count(status, count, data, 1);
}

static void on_channels(int status, const char *const *names, size_t n, void *data) {
  pending *p = data;
  PyGILState_STATE g;
  if (!enter_python(&g))
    return;
  if (status < 0) {
    pending_finish(p, exc_from_code(state_of(p->owner), status, NULL), 1);
  } else {
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list && i < n; i++) {
      PyObject *s = PyUnicode_DecodeUTF8(names[i], (Py_ssize_t)strlen(names[i]), "replace");
      if (!s) {
        Py_CLEAR(list);
        break;
      }
      PyList_SET_ITEM(list, (Py_ssize_t)i, s);
    }
    pending_finish(p, list, 0);
  }
  PyGILState_Release(g);
}

static void on_json(int status, const char *json, size_t len, void *data) {
  pending *p = data;
  PyGILState_STATE g;
  if (!enter_python(&g))
    return;
  if (status < 0)
    pending_finish(p, exc_from_code(state_of(p->owner), status, NULL), 1);
  else
    pending_finish(
        p, PyUnicode_DecodeUTF8(json ? json : "[]", json ? (Py_ssize_t)len : 2, "strict"), 0);
  PyGILState_Release(g);
}

static void on_stats(int status, const vx_stats *s, void *data) {
  pending *p = data;
  PyGILState_STATE g;
  if (!enter_python(&g))
    return;
  if (status < 0)
    pending_finish(p, exc_from_code(state_of(p->owner), status, NULL), 1);
  else
    pending_finish(p,
                   Py_BuildValue("{sKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsK}", "connections",
                                 (unsigned long long)s->connections, "channels",
                                 (unsigned long long)s->channels, "messages_delivered",
                                 (unsigned long long)s->messages_delivered, "bytes_written",
                                 (unsigned long long)s->bytes_written, "slow_consumer_closes",
                                 (unsigned long long)s->slow_consumer_closes, "ping_timeouts",
                                 (unsigned long long)s->ping_timeouts, "rejected_connections",
                                 (unsigned long long)s->rejected_connections, "flow_paused_ms",
                                 (unsigned long long)s->flow_paused_ms, "flow_wait_ms",
                                 (unsigned long long)s->flow_wait_ms, "flow_waits",
                                 (unsigned long long)s->flow_waits, "flow_refused",
                                 (unsigned long long)s->flow_refused, "flow_lagging",
                                 (unsigned long long)s->flow_lagging, "command_queue_bytes",
                                 (unsigned long long)s->command_queue_bytes, "unsent_bytes",
                                 (unsigned long long)s->unsent_bytes, "tls_errors",
                                 (unsigned long long)s->tls_errors, "history_bytes",
                                 (unsigned long long)s->history_bytes, "history_streams",
                                 (unsigned long long)s->history_streams),
                   0);
  PyGILState_Release(g);
}

/* Start a query: `start` issues the core call with the given record. With a callback,
 * returns None at once; without, waits (GIL released) and returns the value. */
typedef int (*start_fn)(CoreObject *self, const char *channel, pending *p);

static PyObject *run_query(CoreObject *self, const char *channel, PyObject *callback,
                           start_fn start) {
  if (check_open(self) < 0)
    return NULL;
  if (callback && callback != Py_None) {
    if (!PyCallable_Check(callback))
      return PyErr_Format(PyExc_TypeError, "callback must be callable");
    pending *p = pending_new(self, callback);
    if (!p)
      return NULL;
    int rc = start(self, channel, p);
    if (rc < 0) {
      Py_DECREF(p->callback);
      Py_DECREF(p->owner);
      PyMem_RawFree(p);
      return raise_from_code(state_of(self), rc);
    }
    Py_RETURN_NONE;
  }
  pending p;
  memset(&p, 0, sizeof(p));
  p.owner = self;
  pthread_mutex_init(&p.mu, NULL);
  pthread_cond_init(&p.cv, NULL);
  int rc = start(self, channel, &p);
  if (rc == 0) {
    Py_BEGIN_ALLOW_THREADS pthread_mutex_lock(&p.mu);
    while (!p.done)
      pthread_cond_wait(&p.cv, &p.mu);
    pthread_mutex_unlock(&p.mu);
    Py_END_ALLOW_THREADS
  }
  pthread_cond_destroy(&p.cv);
  pthread_mutex_destroy(&p.mu);
  if (rc < 0)
    return raise_from_code(state_of(self), rc);
  if (p.is_error) {
    PyErr_SetObject((PyObject *)Py_TYPE(p.result), p.result);
    Py_DECREF(p.result);
    return NULL;
  }
  return p.result;
}

static int start_count(CoreObject *self, const char *channel, pending *p) {
  return vx_subscriber_count(self->ev, channel, on_count_int, p);
}
static int start_has(CoreObject *self, const char *channel, pending *p) {
  return vx_has_subscribers(self->ev, channel, on_count_bool, p);
}
static int start_channels(CoreObject *self, const char *channel, pending *p) {
  (void)channel;
  return vx_channels(self->ev, on_channels, p);
}
static int start_presence(CoreObject *self, const char *channel, pending *p) {
  return vx_presence_members(self->ev, channel, on_json, p);
}
/* The arguments of a history / publish query beyond the channel: set by the method right
 * before run_query, read by its start function on the same thread. */
typedef struct {
  uint64_t since;
  uint32_t limit;
  const char *event, *data, *except_id;
  size_t dlen;
} qargs;
static _Thread_local const qargs *cur_args;

static int start_history(CoreObject *self, const char *channel, pending *p) {
  return vx_history(self->ev, channel, cur_args->since, cur_args->limit, on_json, p);
}

static void on_published(int status, uint64_t offset, const char *epoch, void *data) {
  pending *p = data;
  PyGILState_STATE g;
  if (!enter_python(&g))
    return;
  if (status < 0)
    pending_finish(p, exc_from_code(state_of(p->owner), status, NULL), 1);
  else
    pending_finish(p,
                   Py_BuildValue("{sKss}", "offset", (unsigned long long)offset, "epoch",
                                 epoch ? epoch : ""),
                   0);
  PyGILState_Release(g);
}

static int wait_room(CoreObject *self, int *rc);

/* Like broadcast(): when the core has no room (flow control) it waits, GIL released. */
static int start_publish(CoreObject *self, const char *channel, pending *p) {
  const qargs *a = cur_args;
  int rc;
  while ((rc = vx_publish(self->ev, channel, a->event, a->data, a->dlen, a->except_id,
                          on_published, p)) == VX_EAGAIN) {
    if (wait_room(self, &rc) < 0)
      return VX_EAGAIN; /* interrupted by a signal */
    if (rc == VX_ECLOSED)
      return rc;
  }
  return rc;
}

static int start_stats(CoreObject *self, const char *channel, pending *p) {
  (void)channel;
  return vx_stats_get(self->ev, on_stats, p);
}

static int start_metrics(CoreObject *self, const char *channel, pending *p) {
  (void)channel;
  return vx_metrics(self->ev, on_json, p); /* vx_text_cb: the same shape as vx_json_cb */
}

static PyObject *Core_subscriber_count(CoreObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"channel", "callback", NULL};
  const char *channel;
  PyObject *cb = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "s|O:subscriber_count", kwlist, &channel, &cb))
    return NULL;
  return run_query(self, channel, cb, start_count);
}

static PyObject *Core_has_subscribers(CoreObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"channel", "callback", NULL};
  const char *channel;
  PyObject *cb = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "s|O:has_subscribers", kwlist, &channel, &cb))
    return NULL;
  return run_query(self, channel, cb, start_has);
}

static PyObject *Core_presence_members(CoreObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"channel", "callback", NULL};
  const char *channel;
  PyObject *cb = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "s|O:presence_members", kwlist, &channel, &cb))
    return NULL;
  return run_query(self, channel, cb, start_presence);
}

static PyObject *Core_history(CoreObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"channel", "since", "limit", "callback", NULL};
  const char *channel;
  unsigned long long since = 0;
  unsigned int limit = 0;
  PyObject *cb = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "s|KIO:history", kwlist, &channel, &since, &limit,
                                   &cb))
    return NULL;
  qargs a = {.since = since, .limit = limit};
  cur_args = &a;
  PyObject *r = run_query(self, channel, cb, start_history);
  cur_args = NULL;
  return r;
}

static PyObject *Core_publish(CoreObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"channel", "event", "data", "except_id", "callback", NULL};
  const char *channel, *event, *except_id = NULL;
  PyObject *data, *cb = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "ssO|zO:publish", kwlist, &channel, &event, &data,
                                   &except_id, &cb))
    return NULL;
  Py_buffer buf = {0};
  qargs a = {.event = event, .except_id = except_id};
  if (data != Py_None) {
    if (PyObject_GetBuffer(data, &buf, PyBUF_SIMPLE) < 0)
      return NULL;
    a.data = buf.buf;
    a.dlen = (size_t)buf.len;
  }
  cur_args = &a;
  PyObject *r = run_query(self, channel, cb, start_publish);
  cur_args = NULL;
  if (data != Py_None)
    PyBuffer_Release(&buf);
  return r;
}

static PyObject *Core_channels(CoreObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"callback", NULL};
  PyObject *cb = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:channels", kwlist, &cb))
    return NULL;
  return run_query(self, NULL, cb, start_channels);
}

static PyObject *Core_stats(CoreObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"callback", NULL};
  PyObject *cb = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:stats", kwlist, &cb))
    return NULL;
  return run_query(self, NULL, cb, start_stats);
}

static PyObject *Core_metrics(CoreObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"callback", NULL};
  PyObject *cb = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:metrics", kwlist, &cb))
    return NULL;
  return run_query(self, NULL, cb, start_metrics);
}

/* ---- broadcast ---------------------------------------------------------------------- */

/* broadcast(channels, event, data, except_id=None, wait=True): `channels` a str or a
 * list/tuple of str, `data` bytes-like JSON text or None. Queues the broadcast; when the core
 * has no room (flow control) it waits with the GIL released until it has (wait=True; a
 * signal such as Ctrl-C interrupts the wait) or returns False at once (wait=False). True
 * once accepted. */
static int wait_room(CoreObject *self, int *rc) {
  int w;
  vx_events *ev = self->ev; /* freed only by the Core's dealloc, never while this runs */
  Py_BEGIN_ALLOW_THREADS w = vx_wait_capacity(ev, 200);
  Py_END_ALLOW_THREADS
  if (PyErr_CheckSignals() < 0)
    return -1;
  if (w == VX_ECLOSED)
    *rc = w;
  return 0;
}

static PyObject *Core_broadcast(CoreObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"channels", "event", "data", "except_id", "wait", NULL};
  PyObject *channels, *data;
  const char *event, *except_id = NULL;
  int wait = 1;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "OsO|zp:broadcast", kwlist, &channels, &event, &data,
                                   &except_id, &wait))
    return NULL;
  if (check_open(self) < 0)
    return NULL;
  Py_buffer buf = {0};
  const char *dp = NULL;
  size_t dlen = 0;
  if (data != Py_None) {
    if (PyObject_GetBuffer(data, &buf, PyBUF_SIMPLE) < 0)
      return NULL;
    dp = buf.buf;
    dlen = (size_t)buf.len;
  }
  int rc;
  if (PyUnicode_Check(channels)) {
    const char *ch = PyUnicode_AsUTF8(channels);
    if (!ch) {
      PyBuffer_Release(&buf);
      return NULL;
    }
    while ((rc = vx_broadcast(self->ev, ch, event, dp, dlen, except_id)) == VX_EAGAIN && wait)
      if (wait_room(self, &rc) < 0 || rc == VX_ECLOSED)
        break;
    if (PyErr_Occurred()) {
      PyBuffer_Release(&buf);
      return NULL;
    }
  } else {
    /* a tuple of its own: the names must outlive a wait with the GIL released */
    PyObject *seq = PySequence_Tuple(channels);
    if (!seq) {
      PyBuffer_Release(&buf);
      return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    const char *small[16];
    const char **names = n <= 16 ? small : PyMem_Malloc(sizeof(char *) * (size_t)n);
    if (!names) {
      Py_DECREF(seq);
      PyBuffer_Release(&buf);
      return PyErr_NoMemory();
    }
    rc = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
      PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
      if (!PyUnicode_Check(item)) {
        PyErr_SetString(PyExc_TypeError, "channel names must be str");
        rc = 1;
        break;
      }
      if (!(names[i] = PyUnicode_AsUTF8(item))) {
        rc = 1;
        break;
      }
    }
    if (rc == 0)
      while ((rc = vx_broadcast_many(self->ev, names, (size_t)n, event, dp, dlen, except_id)) ==
                 VX_EAGAIN &&
             wait)
        if (wait_room(self, &rc) < 0 || rc == VX_ECLOSED) {
          rc = PyErr_Occurred() ? 1 : rc;
          break;
        }
    if (names != small)
      PyMem_Free((void *)names);
    Py_DECREF(seq);
    if (rc == 1) {
      PyBuffer_Release(&buf);
      return NULL;
    }
  }
  PyBuffer_Release(&buf);
  if (rc == VX_EAGAIN)
    Py_RETURN_FALSE;
  if (rc < 0)
    return raise_from_code(state_of(self), rc);
  Py_RETURN_TRUE;
}

/* capacity(callback): callback(None) on the loop thread once the core has room for
 * broadcasts again, or callback(VxError) when it closes first. */
static void on_capacity(int status, void *data) {
  pending *p = data;
  PyGILState_STATE g;
  if (!enter_python(&g))
    return;
  if (status < 0) {
    pending_finish(p, exc_from_code(state_of(p->owner), status, NULL), 1);
  } else {
    Py_INCREF(Py_None);
    pending_finish(p, Py_None, 0);
  }
  PyGILState_Release(g);
}
static int start_capacity(CoreObject *self, const char *channel, pending *p) {
  (void)channel;
  return vx_on_capacity(self->ev, on_capacity, p);
}
static PyObject *Core_capacity(CoreObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"callback", NULL};
  PyObject *cb = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:capacity", kwlist, &cb))
    return NULL;
  return run_query(self, NULL, cb, start_capacity);
}

/* ---- listen, sign, auth ----------------------------------------------------------- */

static PyObject *Core_listen(CoreObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"host", "port", NULL};
  const char *host;
  int port, bound = 0, rc;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "si:listen", kwlist, &host, &port))
    return NULL;
  if (check_open(self) < 0)
    return NULL;
  Py_BEGIN_ALLOW_THREADS rc = vx_listen(self->ev, host, port, &bound);
  Py_END_ALLOW_THREADS if (rc < 0) return raise_from_code(state_of(self), rc);
  return PyLong_FromLong(bound);
}

/* configure_tls(cert, key, ca=None): PEM text or file paths, before listen; raises
 * VxValueError (code ETLS) with the core's reason when they cannot be used. */
static PyObject *Core_configure_tls(CoreObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"cert", "key", "ca", NULL};
  const char *cert, *key, *ca = NULL;
  char err[512] = {0};
  int rc;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "ss|z:configure_tls", kwlist, &cert, &key, &ca))
    return NULL;
  if (check_open(self) < 0)
    return NULL;
  Py_BEGIN_ALLOW_THREADS rc = vx_tls_configure(self->ev, cert, key, ca, err, sizeof err);
  Py_END_ALLOW_THREADS if (rc < 0) {
    PyObject *exc = exc_from_code(state_of(self), rc, err[0] ? err : NULL);
    if (exc) {
      PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
      Py_DECREF(exc);
    }
    return NULL;
  }
  Py_RETURN_NONE;
}

static PyObject *Core_sign(CoreObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"socket_id", "channel", "channel_data", NULL};
  const char *sid, *channel, *cdata = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "ss|z:sign", kwlist, &sid, &channel, &cdata))
    return NULL;
  if (check_open(self) < 0)
    return NULL;
  size_t cap = 200 + 66 + strlen(sid) + 1;
  char *out = PyMem_Malloc(cap);
  if (!out)
    return PyErr_NoMemory();
  int n = vx_sign(self->ev, sid, channel, cdata, out, cap);
  if (n < 0) {
    PyMem_Free(out);
    return raise_from_code(state_of(self), n);
  }
  PyObject *r = PyUnicode_FromStringAndSize(out, n);
  PyMem_Free(out);
  return r;
}

static PyObject *Core_auth_reply(CoreObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"id", "authorized", "member_json", "error", NULL};
  unsigned long long id;
  int authorized;
  const char *member = NULL, *error = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "Kp|zz:auth_reply", kwlist, &id, &authorized, &member,
                                   &error))
    return NULL;
  if (!self->ev) /* never opened or freed: nothing can be waiting for this answer */
    return raise_from_code(state_of(self), VX_ECLOSED);
  int rc = vx_auth_reply(self->ev, (uint64_t)id, authorized, member, error);
  if (rc < 0)
    return raise_from_code(state_of(self), rc);
  Py_RETURN_NONE;
}

/* The core's authorize hook, on the loop thread. It must not block: the dispatcher only
 * hands the request to a worker (Python side) and returns; the worker answers with
 * auth_reply(). Any failure here refuses the request instead of leaving it to time out. */
static void on_authorize(const vx_auth_request *req, void *data) {
  CoreObject *self = data;
  PyGILState_STATE g;
  int entered = !atomic_load(&self->closing) && enter_python(&g);
  /* Re-checked under the GIL: tp_clear may have dropped the dispatcher meanwhile. */
  if (!entered || atomic_load(&self->closing) || !self->authorize) {
    if (entered)
      PyGILState_Release(g);
    vx_auth_reply(self->ev, req->id, 0, NULL, "server is shutting down");
    return;
  }
  PyObject *r = PyObject_CallFunction(self->authorize, "Kizzzzyy#y#", (unsigned long long)req->id,
                                      req->kind, req->socket_id, req->channel, req->channel_type,
                                      req->method, req->url ? req->url : "", req->headers,
                                      (Py_ssize_t)(req->headers ? req->headers_len : 0), req->body,
                                      (Py_ssize_t)(req->body ? req->body_len : 0));
  if (!r) {
    PyErr_WriteUnraisable(self->authorize);
    vx_auth_reply(self->ev, req->id, 0, NULL, "authorizer failed");
  }
  Py_XDECREF(r);
  PyGILState_Release(g);
}

/* A client event the core accepted (loop thread). The Python side only queues it for
 * its own worker, so the loop is held for one call. */
static void on_client_event(const char *socket_id, const char *channel, const char *event,
                            const char *data, size_t data_len, void *hook_data) {
  CoreObject *self = hook_data;
  PyGILState_STATE g;
  if (atomic_load(&self->closing) || !enter_python(&g))
    return;
  if (self->client_event) {
    PyObject *r = PyObject_CallFunction(self->client_event, "sssy#", socket_id, channel, event,
                                        data ? data : "null", (Py_ssize_t)(data ? data_len : 4));
    if (!r)
      PyErr_WriteUnraisable(self->client_event);
    Py_XDECREF(r);
  }
  PyGILState_Release(g);
}

/* The core's log hook (loop thread). Logging is rare (warnings by default), so taking
 * the GIL here costs nothing on the broadcast path. */
static void on_log(int level, const char *message, void *data) {
  CoreObject *self = data;
  PyGILState_STATE g;
  if (atomic_load(&self->closing) || !enter_python(&g))
    return;
  if (self->log) {
    PyObject *r = PyObject_CallFunction(self->log, "is", level, message);
    if (!r)
      PyErr_WriteUnraisable(self->log);
    Py_XDECREF(r);
  }
  PyGILState_Release(g);
}

/* ---- close and lifetime ------------------------------------------------------------ */

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done;
  int status;
  uint64_t unpublished;
} close_wait;

static void on_closed(int status, uint64_t unpublished, void *data) {
  close_wait *w = data;
  pthread_mutex_lock(&w->mu);
  w->status = status;
  w->unpublished = unpublished;
  w->done = 1;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

/* close(grace_ms=0): graceful close; returns once every client is closed, every broadcast
 * still held for Redis is published (within the grace) and the loop thread is about to
 * exit. Raises VxError (code EUNPUBLISHED, .unpublished = the count) when some broadcasts
 * never reached Redis; the instance is closed all the same. Idempotent. The handle itself
 * is freed by the destructor, so threads still holding this object only ever see
 * VxClosedError. */
static PyObject *Core_close(CoreObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"grace_ms", NULL};
  unsigned int grace = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|I:close", kwlist, &grace))
    return NULL;
  if (!self->ev || self->closed || atomic_exchange(&self->closing, 1))
    Py_RETURN_NONE;
  close_wait w = {.done = 0};
  pthread_mutex_init(&w.mu, NULL);
  pthread_cond_init(&w.cv, NULL);
  int rc = vx_shutdown(self->ev, grace, on_closed, &w);
  if (rc == 0) {
    Py_BEGIN_ALLOW_THREADS pthread_mutex_lock(&w.mu);
    while (!w.done)
      pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    Py_END_ALLOW_THREADS
  }
  pthread_cond_destroy(&w.cv);
  pthread_mutex_destroy(&w.mu);
  self->closed = 1;
  if (rc == 0 && w.status < 0) {
    char text[200];
    snprintf(text, sizeof text,
             "%llu broadcast%s accepted before close %s not published to Redis (Redis "
             "unreachable or not answering within the grace period, or refused)",
             (unsigned long long)w.unpublished, w.unpublished == 1 ? "" : "s",
             w.unpublished == 1 ? "was" : "were");
    PyObject *exc = exc_from_code(state_of(self), w.status, text);
    PyObject *n = exc ? PyLong_FromUnsignedLongLong(w.unpublished) : NULL;
    if (n && PyObject_SetAttrString(exc, "unpublished", n) == 0)
      PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_XDECREF(n);
    Py_XDECREF(exc);
    return NULL;
  }
  Py_RETURN_NONE;
}

static PyObject *Core_get_closed(CoreObject *self, void *unused) {
  (void)unused;
  return PyBool_FromLong(!self->ev || self->closed || atomic_load(&self->closing));
}

/* Raise the core's refusal of an option: its own message, as exc_from_code's type. */
static PyObject *raise_option(core_state *st, int code, const char *message) {
  PyObject *exc = exc_from_code(st, code, message);
  if (exc) {
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
  }
  return NULL;
}

/* Apply {name: text} with vx_options_set (the core's one parser and validator), then
 * vx_options_check. The texts are borrowed from the dict, which outlives vx_new. */
static int apply_options(core_state *st, PyObject *options, vx_options *o) {
  char err[512] = "";
  if (options && options != Py_None) {
    if (!PyDict_Check(options)) {
      PyErr_SetString(PyExc_TypeError, "options must be a dict of str to str");
      return -1;
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(options, &pos, &key, &value)) {
      if (!PyUnicode_Check(key) || !PyUnicode_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "options must be a dict of str to str");
        return -1;
      }
      const char *name = PyUnicode_AsUTF8(key), *text = PyUnicode_AsUTF8(value);
      if (!name || !text)
        return -1;
      int r = vx_options_set(o, name, text, err, sizeof err);
      if (r < 0) {
        raise_option(st, r, err);
        return -1;
      }
    }
  }
  int r = vx_options_check(o, err, sizeof err);
  if (r < 0) {
    raise_option(st, r, err);
    return -1;
  }
  return 0;
}

/* Core(*, options={name: text}, authorize=None, log=None, on_client_event=None): every core
 * option by its table name (the Python layer turns values into text), checked by the core. */
static PyObject *Core_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"options", "authorize", "log", "on_client_event", NULL};
  PyObject *options = Py_None, *authorize = Py_None, *log = Py_None, *client_event = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|$OOOO:Core", kwlist, &options, &authorize, &log,
                                   &client_event))
    return NULL;
  if (client_event != Py_None && !PyCallable_Check(client_event))
    return PyErr_Format(PyExc_TypeError, "on_client_event must be callable or None");
  if (log != Py_None && !PyCallable_Check(log))
    return PyErr_Format(PyExc_TypeError, "log must be callable or None");
  if (authorize != Py_None && !PyCallable_Check(authorize))
    return PyErr_Format(PyExc_TypeError, "authorize must be callable or None");

  vx_options o;
  vx_options_init(&o);
  if (apply_options(PyType_GetModuleState(type), options, &o) < 0)
    return NULL;

  CoreObject *self = (CoreObject *)type->tp_alloc(type, 0);
  if (!self)
    return NULL;
  atomic_init(&self->closing, 0);
  if (authorize != Py_None)
    self->authorize = Py_NewRef(authorize);

  if (self->authorize)
    o.authorize = on_authorize;
  if (client_event != Py_None) {
    self->client_event = Py_NewRef(client_event);
    o.on_client_event = on_client_event;
  }
  if (log != Py_None) {
    self->log = Py_NewRef(log);
    o.on_log = on_log;
  }
  o.hook_data = self;

  int rc;
  vx_events *ev = NULL;
  Py_BEGIN_ALLOW_THREADS rc = vx_new(&ev, &o);
  Py_END_ALLOW_THREADS if (rc < 0) {
    core_state *st = PyType_GetModuleState(type);
    Py_DECREF(self);
    return raise_from_code(st, rc);
  }
  self->ev = ev;
  return (PyObject *)self;
}

static int Core_traverse(CoreObject *self, visitproc visit, void *arg) {
  Py_VISIT(Py_TYPE(self));
  Py_VISIT(self->authorize);
  Py_VISIT(self->log);
  Py_VISIT(self->client_event);
  return 0;
}

/* GC clear: break the cycle through the dispatcher only. The handle itself is freed in
 * the destructor (freeing joins the loop thread, which must not happen inside a GC pass);
 * the closing flag makes the hook answer without the dispatcher meanwhile. */
static int Core_clear(CoreObject *self) {
  atomic_store(&self->closing, 1);
  Py_CLEAR(self->authorize);
  Py_CLEAR(self->log);
  Py_CLEAR(self->client_event);
  return 0;
}

/* The part of destruction that may block: free the handle (joins the loop thread), then
 * the object. Runs with the GIL held, on any thread but a loop thread. */
static void core_destroy(CoreObject *self) {
  PyTypeObject *tp = Py_TYPE(self);
  if (self->ev) {
    /* self->ev stays valid until vx_free returns: the hook may still use it to refuse. */
    Py_BEGIN_ALLOW_THREADS vx_free(self->ev);
    Py_END_ALLOW_THREADS self->ev = NULL;
  }
  Py_CLEAR(self->authorize);
  Py_CLEAR(self->log);
  Py_CLEAR(self->client_event);
  tp->tp_free(self);
  Py_DECREF(tp);
}

static int core_destroy_later(void *arg) {
  core_destroy(arg);
  return 0;
}

static void Core_dealloc(CoreObject *self) {
  PyObject_GC_UnTrack(self);
  if (self->weakreflist)
    PyObject_ClearWeakRefs((PyObject *)self);
  atomic_store(&self->closing, 1);
  /* The last reference can drop on a loop thread (a query callback's record, a hook's
   * temporary). Freeing there would make the loop thread join itself; the main thread
   * finishes the job instead. Until then the memory stays valid for the hooks, which see
   * `closing` and stay out of Python. If even that cannot be queued, leak rather than
   * deadlock. */
  if (on_loop_thread && self->ev) {
    Py_AddPendingCall(core_destroy_later, self);
    return;
  }
  core_destroy(self);
}

static PyMethodDef Core_methods[] = {
    {"listen", (PyCFunction)(void (*)(void))Core_listen, METH_VARARGS | METH_KEYWORDS,
     "listen(host, port) -> bound port. Blocks (GIL released) until bound."},
    {"configure_tls", (PyCFunction)(void (*)(void))Core_configure_tls, METH_VARARGS | METH_KEYWORDS,
     "configure_tls(cert, key, ca=None): TLS on the listener (PEM text or file paths)."},
    {"broadcast", (PyCFunction)(void (*)(void))Core_broadcast, METH_VARARGS | METH_KEYWORDS,
     "broadcast(channels, event, data, except_id=None). data: JSON bytes or None."},
    {"subscriber_count", (PyCFunction)(void (*)(void))Core_subscriber_count,
     METH_VARARGS | METH_KEYWORDS, "subscriber_count(channel, callback=None)"},
    {"has_subscribers", (PyCFunction)(void (*)(void))Core_has_subscribers,
     METH_VARARGS | METH_KEYWORDS, "has_subscribers(channel, callback=None)"},
    {"history", (PyCFunction)(void (*)(void))Core_history, METH_VARARGS | METH_KEYWORDS,
     "history(channel, since=0, limit=0, callback=None) -> JSON text"},
    {"publish", (PyCFunction)(void (*)(void))Core_publish, METH_VARARGS | METH_KEYWORDS,
     "publish(channel, event, data, except_id=None, callback=None) -> {offset, epoch}"},
    {"presence_members", (PyCFunction)(void (*)(void))Core_presence_members,
     METH_VARARGS | METH_KEYWORDS, "presence_members(channel, callback=None) -> JSON text"},
    {"channels", (PyCFunction)(void (*)(void))Core_channels, METH_VARARGS | METH_KEYWORDS,
     "channels(callback=None)"},
    {"capacity", (PyCFunction)(void (*)(void))Core_capacity, METH_VARARGS | METH_KEYWORDS,
     "capacity(callback=None): wait (or call back) until broadcasts have room again"},
    {"stats", (PyCFunction)(void (*)(void))Core_stats, METH_VARARGS | METH_KEYWORDS,
     "stats(callback=None)"},
    {"metrics", (PyCFunction)(void (*)(void))Core_metrics, METH_VARARGS | METH_KEYWORDS,
     "metrics(callback=None): the Prometheus text of GET /metrics"},
    {"sign", (PyCFunction)(void (*)(void))Core_sign, METH_VARARGS | METH_KEYWORDS,
     "sign(socket_id, channel, channel_data=None) -> token"},
    {"auth_reply", (PyCFunction)(void (*)(void))Core_auth_reply, METH_VARARGS | METH_KEYWORDS,
     "auth_reply(id, authorized, member_json=None, error=None)"},
    {"close", (PyCFunction)(void (*)(void))Core_close, METH_VARARGS | METH_KEYWORDS,
     "close(grace_ms=0): close gracefully and wait for it."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Core_getset[] = {
    {"closed", (getter)Core_get_closed, NULL, "whether close() was requested", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyMemberDef Core_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(CoreObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL}};

static PyType_Slot Core_slots[] = {
    {Py_tp_new, Core_new},
    {Py_tp_dealloc, Core_dealloc},
    {Py_tp_traverse, Core_traverse},
    {Py_tp_clear, Core_clear},
    {Py_tp_methods, Core_methods},
    {Py_tp_getset, Core_getset},
    {Py_tp_members, Core_members},
    {Py_tp_doc, "A libvxevents instance (one event loop on its own thread)."},
    {0, NULL}};

static PyType_Spec Core_spec = {
    .name = "vxevents._core.Core",
    .basicsize = sizeof(CoreObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Core_slots,
};

/* ---- module ------------------------------------------------------------------------ */

static PyObject *mod_strerror(PyObject *m, PyObject *arg) {
  (void)m;
  long code = PyLong_AsLong(arg);
  if (code == -1 && PyErr_Occurred())
    return NULL;
  return PyUnicode_FromString(vx_strerror((int)code));
}

static const char *type_name(int type) {
  switch (type) {
  case VX_OPT_UINT:
    return "uint";
  case VX_OPT_SIZE:
    return "size";
  case VX_OPT_BOOL:
    return "bool";
  case VX_OPT_LEVEL:
    return "level";
  case VX_OPT_PATH:
    return "path";
  case VX_OPT_SECRET:
    return "secret";
  case VX_OPT_REDIS:
    return "redis";
  default:
    return "string";
  }
}

/* option_table() -> [{name, python, node, flag, type, min, max, default, help}]: the core's
 * options table, which vxevents/__init__.py offers and the tests hold the stubs to. */
static PyObject *mod_option_table(PyObject *m, PyObject *unused) {
  (void)m;
  (void)unused;
  size_t n = 0;
  const vx_option_info *t = vx_option_table(&n);
  PyObject *list = PyList_New((Py_ssize_t)n);
  if (!list)
    return NULL;
  for (size_t i = 0; i < n; i++) {
    int is_num = t[i].type == VX_OPT_UINT || t[i].type == VX_OPT_SIZE || t[i].type == VX_OPT_LEVEL;
    PyObject *def = t[i].type == VX_OPT_BOOL ? PyBool_FromLong(t[i].default_number != 0)
                    : is_num                 ? PyLong_FromUnsignedLongLong(t[i].default_number)
                    : t[i].default_string    ? PyUnicode_FromString(t[i].default_string)
                                             : Py_NewRef(Py_None);
    PyObject *row =
        def ? Py_BuildValue("{s:s,s:z,s:z,s:s,s:s,s:K,s:K,s:O,s:s}", "name", t[i].name, "python",
                            t[i].python, "node", t[i].node, "flag", t[i].flag, "type",
                            type_name(t[i].type), "min", (unsigned long long)t[i].min, "max",
                            (unsigned long long)t[i].max, "default", def, "help", t[i].help)
            : NULL;
    Py_XDECREF(def);
    if (!row) {
      Py_DECREF(list);
      return NULL;
    }
    PyList_SET_ITEM(list, (Py_ssize_t)i, row);
  }
  return list;
}

static PyMethodDef module_methods[] = {
    {"strerror", mod_strerror, METH_O, "strerror(code) -> the core's description"},
    {"option_table", mod_option_table, METH_NOARGS,
     "option_table() -> the core's options table, one dict per option"},
    {NULL, NULL, 0, NULL}};

static int module_exec(PyObject *m) {
  core_state *st = PyModule_GetState(m);
  st->VxError = PyErr_NewExceptionWithDoc(
      "vxevents.VxError", "An error reported by libvxevents; .code is its stable name.",
      PyExc_Exception, NULL);
  if (!st->VxError)
    return -1;
  PyObject *bases = PyTuple_Pack(2, st->VxError, PyExc_ValueError);
  if (!bases)
    return -1;
  st->VxValueError = PyErr_NewExceptionWithDoc(
      "vxevents.VxValueError", "A bad argument refused by libvxevents.", bases, NULL);
  Py_DECREF(bases);
  if (!st->VxValueError)
    return -1;
  st->VxClosedError = PyErr_NewExceptionWithDoc("vxevents.VxClosedError", "The instance is closed.",
                                                st->VxError, NULL);
  if (!st->VxClosedError)
    return -1;
  st->CoreType = (PyTypeObject *)PyType_FromModuleAndSpec(m, &Core_spec, NULL);
  if (!st->CoreType)
    return -1;
  if (PyModule_AddObjectRef(m, "VxError", st->VxError) < 0 ||
      PyModule_AddObjectRef(m, "VxValueError", st->VxValueError) < 0 ||
      PyModule_AddObjectRef(m, "VxClosedError", st->VxClosedError) < 0 ||
      PyModule_AddObjectRef(m, "Core", (PyObject *)st->CoreType) < 0 ||
      PyModule_AddStringConstant(m, "CORE_VERSION", VX_VERSION_STRING) < 0 ||
      PyModule_AddIntConstant(m, "AUTH_TOKEN", VX_AUTH_TOKEN) < 0 ||
      PyModule_AddIntConstant(m, "AUTH_SUBSCRIBE", VX_AUTH_SUBSCRIBE) < 0 ||
      PyModule_AddIntConstant(m, "LOG_ERROR", VX_LOG_ERROR) < 0 ||
      PyModule_AddIntConstant(m, "LOG_WARN", VX_LOG_WARN) < 0 ||
      PyModule_AddIntConstant(m, "LOG_INFO", VX_LOG_INFO) < 0 ||
      PyModule_AddIntConstant(m, "LOG_DEBUG", VX_LOG_DEBUG) < 0)
    return -1;
  return 0;
}

static int module_traverse(PyObject *m, visitproc visit, void *arg) {
  core_state *st = PyModule_GetState(m);
  Py_VISIT(st->VxError);
  Py_VISIT(st->VxValueError);
  Py_VISIT(st->VxClosedError);
  Py_VISIT(st->CoreType);
  return 0;
}

static int module_clear(PyObject *m) {
  core_state *st = PyModule_GetState(m);
  Py_CLEAR(st->VxError);
  Py_CLEAR(st->VxValueError);
  Py_CLEAR(st->VxClosedError);
  Py_CLEAR(st->CoreType);
  return 0;
}

static void module_free(void *m) { module_clear((PyObject *)m); }

static PyModuleDef_Slot module_slots[] = {{Py_mod_exec, module_exec}, {0, NULL}};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "vxevents._core",
    .m_doc = "CPython binding of libvxevents (use the vxevents package, not this module).",
    .m_size = sizeof(core_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit__core(void) { return PyModuleDef_Init(&core_module); }
