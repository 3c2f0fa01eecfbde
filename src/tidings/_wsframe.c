/*
 * tidings._wsframe: the client frame reader of tidings.protocol.websocket, in C.
 *
 * FrameReader(max_message).feed(data) returns the same events as the pure-Python
 * FrameReader, in the same order, with the same close codes and reasons: RFC 6455 server
 * side, no extension. The Python module hands its event classes to setup() once; the
 * events are made here by filling their slots directly (they are frozen slotted
 * dataclasses, so a call to the class would run the dataclass __init__ per event).
 *
 * State between reads, all of it owned by the reader and bounded by max_message:
 *   - buf: the bytes of an incomplete frame (freed when a read ends on a frame boundary,
 *     which is nearly always: an idle reader holds no buffer);
 *   - msg: the unmasked payload of a fragmented message in progress;
 *   - utf8: the validator's state for a fragmented text message (RFC 6455 8.1: a text
 *     message may be failed as soon as its bytes cannot be UTF-8, Autobahn 6.4).
 * Checks run in the order the Python reader runs them, so a stream that ends early yields
 * the same events from both.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <string.h>

/* RFC 6455 5.2 opcodes and 7.4.1 close codes. */
enum { OP_CONT = 0x0, OP_TEXT = 0x1, OP_BINARY = 0x2, OP_CLOSE = 0x8, OP_PING = 0x9,
       OP_PONG = 0xA };
enum { PROTOCOL_ERROR = 1002, NO_STATUS = 1005, INVALID_DATA = 1007, MESSAGE_TOO_BIG = 1009 };

/* The event classes, and the offset of each slot, from setup(). */
enum { EV_TEXT, EV_BINARY, EV_PING, EV_PONG, EV_CLOSE, EV_FAILED, EV_COUNT };
static PyTypeObject *event_type[EV_COUNT];
static Py_ssize_t off_data[EV_COUNT]; /* Text, Binary, Ping, Pong: .data */
static Py_ssize_t off_code[EV_COUNT]; /* CloseReceived, Failed: .code */
static Py_ssize_t off_reason[EV_COUNT];

/* ---- UTF-8 validation (Unicode 15, table 3-7), fed byte by byte across fragments ---- */

enum {
    U_ACCEPT,  /* between characters */
    U_CONT1,   /* one 80..BF to go */
    U_CONT2,   /* two 80..BF to go */
    U_E0,      /* after E0: A0..BF, then one more */
    U_ED,      /* after ED: 80..9F (no surrogates), then one more */
    U_CONT3,   /* after F1..F3: three 80..BF to go */
    U_F0,      /* after F0: 90..BF, then two more */
    U_F4,      /* after F4: 80..8F (nothing past U+10FFFF), then two more */
    U_SURROGATE, /* after ED A0..BF: a surrogate, invalid whatever follows (see below) */
    U_REJECT
};

static int
utf8_step(int state, unsigned char b)
{
    switch (state) {
    case U_ACCEPT:
        if (b < 0x80) return U_ACCEPT;
        if (b < 0xC2) return U_REJECT; /* a continuation byte, or an overlong C0/C1 lead */
        if (b < 0xE0) return U_CONT1;
        if (b == 0xE0) return U_E0;
        if (b == 0xED) return U_ED;
        if (b < 0xF0) return U_CONT2;
        if (b == 0xF0) return U_F0;
        if (b < 0xF4) return U_CONT3;
        if (b == 0xF4) return U_F4;
        return U_REJECT;
    case U_CONT1: return (b & 0xC0) == 0x80 ? U_ACCEPT : U_REJECT;
    case U_CONT2: return (b & 0xC0) == 0x80 ? U_CONT1 : U_REJECT;
    case U_E0: return (b >= 0xA0 && b <= 0xBF) ? U_CONT1 : U_REJECT;
    case U_ED:
        /* ED A0..BF starts a surrogate. CPython's incremental decoder, which the Python
         * reader uses, rejects it only once a third byte (or the end of the message)
         * arrives; so does this one, so both readers fail on the same frame. */
        if (b >= 0x80 && b <= 0x9F) return U_CONT1;
        return (b & 0xC0) == 0x80 ? U_SURROGATE : U_REJECT;
    case U_CONT3: return (b & 0xC0) == 0x80 ? U_CONT2 : U_REJECT;
    case U_F0: return (b >= 0x90 && b <= 0xBF) ? U_CONT2 : U_REJECT;
    case U_F4: return (b >= 0x80 && b <= 0x8F) ? U_CONT2 : U_REJECT;
    default: return U_REJECT;
    }
}

static int
utf8_feed(int state, const unsigned char *p, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n) {
        if (state == U_ACCEPT) { /* skip ASCII eight bytes at a time */
            while (i + 8 <= n) {
                uint64_t w;
                memcpy(&w, p + i, 8);
                if (w & 0x8080808080808080ULL)
                    break;
                i += 8;
            }
            if (i == n)
                break;
        }
        state = utf8_step(state, p[i++]);
        if (state == U_REJECT)
            return U_REJECT;
    }
    return state;
}

/* ---- RFC 6455 5.3: unmasking, eight bytes at a time ---- */

static void
unmask_into(unsigned char *dst, const unsigned char *src, Py_ssize_t n, const unsigned char *mask)
{
    unsigned char key[8] = {mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]};
    uint64_t k;
    memcpy(&k, key, 8);
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, 8);
        w ^= k;
        memcpy(dst + i, &w, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ mask[i & 3];
}

/* ---- events ---- */

static PyObject *
make_event1(int kind, PyObject *data) /* steals data */
{
    if (data == NULL)
        return NULL;
    PyTypeObject *type = event_type[kind];
    PyObject *event = type->tp_alloc(type, 0);
    if (event == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    *(PyObject **)((char *)event + off_data[kind]) = data;
    return event;
}

static PyObject *
make_event2(int kind, int code, PyObject *reason) /* steals reason */
{
    if (reason == NULL)
        return NULL;
    PyObject *number = PyLong_FromLong(code);
    if (number == NULL) {
        Py_DECREF(reason);
        return NULL;
    }
    PyTypeObject *type = event_type[kind];
    PyObject *event = type->tp_alloc(type, 0);
    if (event == NULL) {
        Py_DECREF(number);
        Py_DECREF(reason);
        return NULL;
    }
    *(PyObject **)((char *)event + off_code[kind]) = number;
    *(PyObject **)((char *)event + off_reason[kind]) = reason;
    return event;
}

static int
append_event(PyObject *events, PyObject *event) /* steals event */
{
    if (event == NULL)
        return -1;
    int r = PyList_Append(events, event);
    Py_DECREF(event);
    return r;
}

/* ---- the reader ---- */

typedef struct {
    PyObject_HEAD
    long long max_message; /* inclusive; negative: every data frame is too big */
    unsigned char *buf;    /* an incomplete frame's bytes, or NULL */
    Py_ssize_t buf_len, buf_cap;
    unsigned char *msg;    /* a fragmented message's payload so far, or NULL */
    Py_ssize_t msg_len, msg_cap;
    signed char opcode;    /* the fragmented message's opcode, -1 when none */
    signed char utf8;      /* its UTF-8 state (text only) */
    char done;             /* a close or a failure was returned: read nothing more */
} ReaderObject;

/* A protocol violation found while parsing: fail the connection with code and reason. */
typedef struct {
    int code;
    const char *reason;
    int arg; /* for the reasons that name a number (opcode, close code), else -1 */
} Violation;

enum { FRAME_INCOMPLETE = 0, FRAME_ERROR = -1, FRAME_VIOLATION = -2 };

static void
release_message(ReaderObject *self)
{
    PyMem_Free(self->msg);
    self->msg = NULL;
    self->msg_len = self->msg_cap = 0;
    self->opcode = -1;
    self->utf8 = U_ACCEPT;
}

/* Room for n bytes in buf (or msg): both grow by doubling, within max_message + a read. */
static int
reserve(unsigned char **area, Py_ssize_t *cap, Py_ssize_t n)
{
    if (n <= *cap)
        return 0;
    Py_ssize_t grown_cap = *cap ? *cap : 256;
    while (grown_cap < n)
        grown_cap = grown_cap > PY_SSIZE_T_MAX / 2 ? n : grown_cap * 2;
    unsigned char *grown = PyMem_Realloc(*area, (size_t)grown_cap);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *area = grown;
    *cap = grown_cap;
    return 0;
}

static int
valid_close_code(int code)
{
    /* RFC 6455 7.4: as protocol.websocket.valid_close_code. */
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014)
        || (code >= 3000 && code <= 4999);
}

static PyObject *
decode_utf8(const unsigned char *p, Py_ssize_t n, int *invalid)
{
    PyObject *text = PyUnicode_DecodeUTF8((const char *)p, n, "strict");
    if (text == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        *invalid = 1;
    }
    return text;
}

static int
control_frame(ReaderObject *self, int opcode, const unsigned char *masked, Py_ssize_t n,
              const unsigned char *mask, PyObject *events, Violation *v)
{
    unsigned char payload[125];
    unmask_into(payload, masked, n, mask);
    if (opcode == OP_PING || opcode == OP_PONG) {
        PyObject *data = PyBytes_FromStringAndSize((const char *)payload, n);
        return append_event(events, make_event1(opcode == OP_PING ? EV_PING : EV_PONG, data));
    }
    self->done = 1;
    release_message(self);
    if (n == 0)
        return append_event(events, make_event2(EV_CLOSE, NO_STATUS, PyUnicode_FromString("")));
    if (n == 1) {
        *v = (Violation){PROTOCOL_ERROR, "close frame with a one-byte payload", -1};
        return FRAME_VIOLATION;
    }
    int code = (payload[0] << 8) | payload[1];
    if (!valid_close_code(code)) {
        *v = (Violation){PROTOCOL_ERROR, "invalid close code %d", code};
        return FRAME_VIOLATION;
    }
    int invalid = 0;
    PyObject *reason = decode_utf8(payload + 2, n - 2, &invalid);
    if (invalid) {
        *v = (Violation){INVALID_DATA, "invalid UTF-8", -1};
        return FRAME_VIOLATION;
    }
    return append_event(events, make_event2(EV_CLOSE, code, reason));
}

static int
data_frame(ReaderObject *self, int opcode, int fin, const unsigned char *masked, Py_ssize_t n,
           const unsigned char *mask, PyObject *events, Violation *v)
{
    if (fin && opcode != OP_CONT) { /* the common case: one frame, one message */
        if (opcode == OP_BINARY) {
            PyObject *data = PyBytes_FromStringAndSize(NULL, n);
            if (data == NULL)
                return FRAME_ERROR;
            unmask_into((unsigned char *)PyBytes_AS_STRING(data), masked, n, mask);
            return append_event(events, make_event1(EV_BINARY, data));
        }
        unsigned char small[512];
        unsigned char *payload = n <= (Py_ssize_t)sizeof small ? small : PyMem_Malloc((size_t)n);
        if (payload == NULL) {
            PyErr_NoMemory();
            return FRAME_ERROR;
        }
        unmask_into(payload, masked, n, mask);
        int invalid = 0;
        PyObject *text = decode_utf8(payload, n, &invalid);
        if (payload != small)
            PyMem_Free(payload);
        if (invalid) {
            *v = (Violation){INVALID_DATA, "invalid UTF-8", -1};
            return FRAME_VIOLATION;
        }
        return append_event(events, make_event1(EV_TEXT, text));
    }
    if (opcode != OP_CONT) {
        self->opcode = (signed char)opcode;
        self->utf8 = U_ACCEPT;
    }
    if (reserve(&self->msg, &self->msg_cap, self->msg_len + n) < 0)
        return FRAME_ERROR;
    unsigned char *payload = self->msg + self->msg_len;
    unmask_into(payload, masked, n, mask);
    if (self->opcode == OP_TEXT) {
        /* Validate as fragments arrive, so bad UTF-8 fails fast (Autobahn 6.4). */
        int state = utf8_feed(self->utf8, payload, n);
        if (state == U_REJECT || (fin && state != U_ACCEPT)) {
            *v = (Violation){INVALID_DATA, "invalid UTF-8 in a text message", -1};
            return FRAME_VIOLATION;
        }
        self->utf8 = (signed char)state;
    }
    self->msg_len += n;
    if (!fin)
        return 0;
    PyObject *whole;
    int kind;
    if (self->opcode == OP_TEXT) {
        int invalid = 0; /* already validated: cannot be set */
        whole = decode_utf8(self->msg, self->msg_len, &invalid);
        kind = EV_TEXT;
    } else {
        whole = PyBytes_FromStringAndSize((const char *)self->msg, self->msg_len);
        kind = EV_BINARY;
    }
    release_message(self);
    return append_event(events, make_event1(kind, whole));
}

/* Parse one frame at p (avail bytes). Returns its size, FRAME_INCOMPLETE, FRAME_ERROR (a
 * Python exception is set) or FRAME_VIOLATION (v says why). */
static Py_ssize_t
parse_frame(ReaderObject *self, const unsigned char *p, Py_ssize_t avail, PyObject *events,
            Violation *v)
{
    if (avail < 2)
        return FRAME_INCOMPLETE;
    int first = p[0], second = p[1];
    int fin = first & 0x80, opcode = first & 0x0F;
    if (first & 0x70) {
        /* RFC 6455 5.2: RSV1-3 must be 0 unless an extension defines them; none is. */
        *v = (Violation){PROTOCOL_ERROR, "reserved bits set", -1};
        return FRAME_VIOLATION;
    }
    if (!(second & 0x80)) {
        /* RFC 6455 5.1: the server MUST close on an unmasked client frame. */
        *v = (Violation){PROTOCOL_ERROR, "unmasked client frame", -1};
        return FRAME_VIOLATION;
    }
    uint64_t length = second & 0x7F;
    Py_ssize_t header = 2;
    if (opcode >= OP_CLOSE) {
        if (opcode > OP_PONG) {
            *v = (Violation){PROTOCOL_ERROR, "unknown opcode %d", opcode};
            return FRAME_VIOLATION;
        }
        /* RFC 6455 5.5: control frames are never fragmented and carry <= 125 bytes. */
        if (!fin) {
            *v = (Violation){PROTOCOL_ERROR, "fragmented control frame", -1};
            return FRAME_VIOLATION;
        }
        if (length > 125) {
            *v = (Violation){PROTOCOL_ERROR, "control frame too long", -1};
            return FRAME_VIOLATION;
        }
    } else if (opcode > OP_BINARY) {
        *v = (Violation){PROTOCOL_ERROR, "unknown opcode %d", opcode};
        return FRAME_VIOLATION;
    } else if (length == 126) {
        if (avail < 4)
            return FRAME_INCOMPLETE;
        length = ((uint64_t)p[2] << 8) | p[3];
        header = 4;
    } else if (length == 127) {
        if (avail < 10)
            return FRAME_INCOMPLETE;
        length = 0;
        for (int i = 2; i < 10; i++)
            length = (length << 8) | p[i];
        if (length >> 63) {
            *v = (Violation){PROTOCOL_ERROR, "payload length has its top bit set", -1};
            return FRAME_VIOLATION;
        }
        header = 10;
    }
    if (opcode < OP_CLOSE) {
        /* RFC 6455 5.4: a continuation needs a message in progress; a new message must not
         * start inside one. */
        if (opcode == OP_CONT && self->opcode < 0) {
            *v = (Violation){PROTOCOL_ERROR, "continuation frame without a message", -1};
            return FRAME_VIOLATION;
        }
        if (opcode != OP_CONT && self->opcode >= 0) {
            *v = (Violation){PROTOCOL_ERROR, "new message inside a fragmented one", -1};
            return FRAME_VIOLATION;
        }
        /* Before the payload arrives: an oversized message is never buffered. */
        if (self->max_message < 0
            || length > (uint64_t)self->max_message - (uint64_t)self->msg_len) {
            *v = (Violation){MESSAGE_TOO_BIG, "message too big", -1};
            return FRAME_VIOLATION;
        }
    }
    /* length <= max_message here, and the frame is in memory or about to be. */
    if (avail < header + 4 || (uint64_t)(avail - header - 4) < length)
        return FRAME_INCOMPLETE;
    const unsigned char *mask = p + header;
    const unsigned char *payload = mask + 4;
    Py_ssize_t n = (Py_ssize_t)length;
    int r = opcode >= OP_CLOSE ? control_frame(self, opcode, payload, n, mask, events, v)
                               : data_frame(self, opcode, fin, payload, n, mask, events, v);
    return r < 0 ? r : header + 4 + n;
}

static void
buf_clear(ReaderObject *self)
{
    PyMem_Free(self->buf);
    self->buf = NULL;
    self->buf_len = self->buf_cap = 0;
}

static PyObject *
Reader_feed(ReaderObject *self, PyObject *arg)
{
    PyObject *events = PyList_New(0);
    if (events == NULL || self->done)
        return events;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        Py_DECREF(events);
        return NULL;
    }
    const unsigned char *data;
    Py_ssize_t end;
    if (self->buf_len) { /* a frame is incomplete: append, then parse from its start */
        Py_ssize_t old = self->buf_len;
        if (reserve(&self->buf, &self->buf_cap, old + view.len) < 0)
            goto error;
        memcpy(self->buf + old, view.buf, (size_t)view.len);
        self->buf_len = old + view.len;
        data = self->buf;
        end = self->buf_len;
    } else {
        data = view.buf;
        end = view.len;
    }
    Py_ssize_t pos = 0;
    Violation v = {0, NULL, -1};
    while (!self->done) {
        Py_ssize_t r = parse_frame(self, data + pos, end - pos, events, &v);
        if (r == FRAME_INCOMPLETE)
            break;
        if (r == FRAME_ERROR)
            goto error;
        if (r == FRAME_VIOLATION) {
            self->done = 1;
            release_message(self);
            PyObject *reason = v.arg >= 0 ? PyUnicode_FromFormat(v.reason, v.arg)
                                          : PyUnicode_FromString(v.reason);
            if (append_event(events, make_event2(EV_FAILED, v.code, reason)) < 0)
                goto error;
            pos = end;
            break;
        }
        pos += r;
    }
    if (self->done || pos == end)
        buf_clear(self);
    else if (data != self->buf) { /* the rest of this read starts the next frame */
        if (reserve(&self->buf, &self->buf_cap, end - pos) < 0)
            goto error;
        memcpy(self->buf, data + pos, (size_t)(end - pos));
        self->buf_len = end - pos;
    } else if (pos) {
        memmove(self->buf, self->buf + pos, (size_t)(end - pos));
        self->buf_len = end - pos;
    }
    PyBuffer_Release(&view);
    return events;
error:
    PyBuffer_Release(&view);
    Py_DECREF(events);
    return NULL;
}

static int
set_max_message(ReaderObject *self, PyObject *value)
{
    int overflow = 0;
    long long limit = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (limit == -1 && PyErr_Occurred())
        return -1;
    self->max_message = overflow > 0 ? LLONG_MAX : overflow < 0 ? -1 : limit;
    return 0;
}

static PyObject *
Reader_get_max_message(ReaderObject *self, void *closure)
{
    return PyLong_FromLongLong(self->max_message);
}

static int
Reader_set_max_message(ReaderObject *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "max_message cannot be deleted");
        return -1;
    }
    return set_max_message(self, value);
}

static int
Reader_init(ReaderObject *self, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"max_message", NULL};
    PyObject *limit;
    if (event_type[EV_TEXT] == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tidings._wsframe.setup() was not called");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!:FrameReader", keywords, &PyLong_Type,
                                     &limit))
        return -1;
    buf_clear(self);
    release_message(self);
    self->done = 0;
    return set_max_message(self, limit);
}

static PyObject *
Reader_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    ReaderObject *self = (ReaderObject *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->opcode = -1;
    return (PyObject *)self;
}

static void
Reader_dealloc(ReaderObject *self)
{
    PyMem_Free(self->buf);
    PyMem_Free(self->msg);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Reader_methods[] = {
    {"feed", (PyCFunction)Reader_feed, METH_O,
     "feed(data) -> list of events: parse what arrived (see tidings.protocol.websocket)."},
    {NULL},
};

static PyGetSetDef Reader_getset[] = {
    {"max_message", (getter)Reader_get_max_message, (setter)Reader_set_max_message,
     "The largest message, in bytes (inclusive).", NULL},
    {NULL},
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tidings._wsframe.FrameReader",
    .tp_doc = "One connection's incoming WebSocket frames (tidings.protocol.websocket).",
    .tp_basicsize = sizeof(ReaderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Reader_new,
    .tp_init = (initproc)Reader_init,
    .tp_dealloc = (destructor)Reader_dealloc,
    .tp_methods = Reader_methods,
    .tp_getset = Reader_getset,
};

/* ---- setup(): the event classes ---- */

/* The offset of a slot holding an object, found through its member descriptor. */
static Py_ssize_t
slot_offset(PyTypeObject *type, const char *name)
{
    PyObject *descr = PyObject_GetAttrString((PyObject *)type, name);
    if (descr == NULL)
        return -1;
    Py_ssize_t offset = -1;
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type == T_OBJECT_EX && !(member->flags & READONLY)
            && ((PyMemberDescrObject *)descr)->d_common.d_type == type)
            offset = member->offset;
    }
    Py_DECREF(descr);
    if (offset < 0)
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot of the class itself", type->tp_name,
                     name);
    return offset;
}

static PyObject *
setup(PyObject *module, PyObject *args)
{
    PyTypeObject *types[EV_COUNT];
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!O!:setup", &PyType_Type, &types[0], &PyType_Type,
                          &types[1], &PyType_Type, &types[2], &PyType_Type, &types[3],
                          &PyType_Type, &types[4], &PyType_Type, &types[5]))
        return NULL;
    Py_ssize_t data[EV_COUNT], code[EV_COUNT], reason[EV_COUNT];
    for (int kind = 0; kind < EV_COUNT; kind++) {
        PyTypeObject *type = types[kind];
        /* Filled slot by slot, so: no __dict__, no __init__ logic beyond the slots. */
        if (type->tp_dictoffset != 0 || type->tp_alloc == NULL) {
            PyErr_Format(PyExc_TypeError, "%s must be a slotted class", type->tp_name);
            return NULL;
        }
        if (kind == EV_CLOSE || kind == EV_FAILED) {
            code[kind] = slot_offset(type, "code");
            reason[kind] = code[kind] < 0 ? -1 : slot_offset(type, "reason");
            if (reason[kind] < 0)
                return NULL;
        } else if ((data[kind] = slot_offset(type, "data")) < 0) {
            return NULL;
        }
    }
    for (int kind = 0; kind < EV_COUNT; kind++) {
        Py_INCREF(types[kind]);
        Py_XSETREF(event_type[kind], types[kind]);
        off_data[kind] = data[kind];
        off_code[kind] = code[kind];
        off_reason[kind] = reason[kind];
    }
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"setup", setup, METH_VARARGS,
     "setup(Text, Binary, Ping, Pong, CloseReceived, Failed): the event classes to return."},
    {NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tidings._wsframe",
    .m_doc = "The client WebSocket frame reader in C (see tidings.protocol.websocket).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__wsframe(void)
{
    if (PyType_Ready(&ReaderType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    Py_INCREF(&ReaderType);
    if (PyModule_AddObject(module, "FrameReader", (PyObject *)&ReaderType) < 0) {
        Py_DECREF(&ReaderType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
