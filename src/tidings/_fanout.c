/*
 * tidings._fanout: write one frame to many sockets in one call.
 *
 * The hot path of a real-time server is one publication written to every subscriber of a
 * channel. In Python that loop costs several microseconds per socket on top of the send()
 * system call itself; here it costs the system call and two cheap method calls.
 *
 * A subscriber is a Sink: the socket's file descriptor, its asyncio transport and its
 * high-water mark. For each Sink, write_many():
 *
 *   1. skips it if it is closing (its own flag, or transport.is_closing(): once a transport
 *      is closing its descriptor may be closed and reused by another connection, so it is
 *      never written to directly again; the Sink is then marked closing for good);
 *   2. when the transport has nothing buffered, sends the frame straight to the descriptor
 *      (non-blocking); whatever the kernel does not take, and any error, is handed to
 *      transport.write(), which buffers it or meets the error and closes itself, exactly as
 *      if it had been written through the transport from the start;
 *   3. when the transport has bytes buffered, appends through transport.write() so the order
 *      of bytes on the socket is kept;
 *   4. reports the Sink as slow when its transport buffer is past the high-water mark.
 *
 * A Sink whose fd is -1 (TLS, or no socket) gets its Python deliver(frame) method, and any
 * object that is not a Sink its publish(publication) method: the frame is only what a
 * WebSocket writes, other edges take the publication and encode it their own way, once. An
 * exception raised for one subscriber is returned with it (the caller logs it) and never
 * stops the others from receiving the frame.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>

typedef struct {
    PyObject_HEAD
    int fd;
    char closing;
    Py_ssize_t high_water;
    PyObject *transport;
} SinkObject;

static PyObject *str_write;
static PyObject *str_publish;
static PyObject *str_deliver;
static PyObject *str_is_closing;
static PyObject *str_get_write_buffer_size;

static PyObject *
Sink_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    SinkObject *self = (SinkObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->fd = -1;
    self->closing = 0;
    self->high_water = PY_SSIZE_T_MAX;
    self->transport = NULL;
    return (PyObject *)self;
}

static int
Sink_traverse(SinkObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->transport);
    return 0;
}

static int
Sink_clear(SinkObject *self)
{
    Py_CLEAR(self->transport);
    return 0;
}

static void
Sink_dealloc(SinkObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Sink_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyMemberDef Sink_members[] = {
    {"fd", T_INT, offsetof(SinkObject, fd), 0,
     "Socket file descriptor written to directly, or -1 to always use send()."},
    {"closing", T_BOOL, offsetof(SinkObject, closing), 0,
     "True once the connection is closing: nothing more is written to it."},
    {"high_water", T_PYSSIZET, offsetof(SinkObject, high_water), 0,
     "Transport buffer size above which the sink is reported as a slow consumer."},
    {"transport", T_OBJECT, offsetof(SinkObject, transport), 0,
     "The asyncio transport of the socket (None until set)."},
    {NULL},
};

static PyType_Slot Sink_slots[] = {
    {Py_tp_doc, "A socket that write_many() can write to directly."},
    {Py_tp_new, Sink_new},
    {Py_tp_dealloc, Sink_dealloc},
    {Py_tp_traverse, Sink_traverse},
    {Py_tp_clear, Sink_clear},
    {Py_tp_members, Sink_members},
    {0, NULL},
};

static PyType_Spec Sink_spec = {
    .name = "tidings._fanout.Sink",
    .basicsize = sizeof(SinkObject),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Sink_slots,
};

static PyTypeObject *SinkType;

enum outcome { WRITTEN, SLOW, SKIPPED, FAILED };

/* transport.<name>() as a C integer; -1 with an exception set on error. */
static Py_ssize_t
call_size(PyObject *transport, PyObject *name)
{
    PyObject *result = PyObject_CallMethodNoArgs(transport, name);
    if (result == NULL)
        return -1;
    Py_ssize_t value = PyLong_AsSsize_t(result);
    Py_DECREF(result);
    return value;
}

static enum outcome
write_sink(SinkObject *sink, PyObject *frame, const char *buf, Py_ssize_t len)
{
    PyObject *transport = sink->transport;
    if (sink->closing || transport == NULL)
        return SKIPPED;
    if (sink->fd < 0) {
        PyObject *r = PyObject_CallMethodOneArg((PyObject *)sink, str_deliver, frame);
        if (r == NULL)
            return FAILED;
        Py_DECREF(r);
        return WRITTEN;
    }
    Py_ssize_t closing = call_size(transport, str_is_closing);
    if (closing < 0)
        return FAILED;
    if (closing) {
        sink->closing = 1; /* the peer is gone: never write to it again */
        return SKIPPED;
    }
    Py_ssize_t pending = call_size(transport, str_get_write_buffer_size);
    if (pending < 0)
        return FAILED;

    PyObject *rest = frame;
    Py_INCREF(rest);
    if (pending == 0) {
        ssize_t sent;
        do {
            sent = send(sink->fd, buf, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (sent < 0 && errno == EINTR);
        if (sent == len) {
            Py_DECREF(rest);
            return WRITTEN;
        }
        if (sent > 0) {
            Py_DECREF(rest);
            rest = PyBytes_FromStringAndSize(buf + sent, len - sent);
            if (rest == NULL)
                return FAILED;
        }
    }
    /* Buffered already, short write, or an error: the transport takes it from here. */
    PyObject *r = PyObject_CallMethodOneArg(transport, str_write, rest);
    Py_DECREF(rest);
    if (r == NULL)
        return FAILED;
    Py_DECREF(r);
    pending = call_size(transport, str_get_write_buffer_size);
    if (pending < 0)
        return FAILED;
    return pending > sink->high_water ? SLOW : WRITTEN;
}

static enum outcome
write_other(PyObject *subscriber, PyObject *publication)
{
    PyObject *r = PyObject_CallMethodOneArg(subscriber, str_publish, publication);
    if (r == NULL)
        return FAILED;
    Py_DECREF(r);
    return WRITTEN;
}

/* Move the current exception into ``failed`` as (target, exception). */
static void
record_failure(PyObject *failed, PyObject *target)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (value != NULL && traceback != NULL)
        PyException_SetTraceback(value, traceback);
    PyObject *entry = Py_BuildValue("(OO)", target, value ? value : Py_None);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
    if (entry == NULL || PyList_Append(failed, entry) < 0)
        PyErr_WriteUnraisable(target); /* out of memory */
    Py_XDECREF(entry);
}

PyDoc_STRVAR(write_many_doc,
"write_many(frame, subscribers, exclude, publication, /) -> (count, slow, failed)\n"
"\n"
"Write the bytes ``frame`` to every Sink of the dict ``subscribers`` (socket id to\n"
"subscriber), and hand ``publication`` to every other subscriber's publish(), except the\n"
"one whose key is ``exclude`` (a key or None). Returns how many\n"
"subscribers were written to, the list of Sinks now past their high-water mark, and a\n"
"list of (subscriber, exception) for writes that raised.");

static PyObject *
write_many(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "write_many() takes exactly 4 arguments");
        return NULL;
    }
    PyObject *frame = args[0], *subscribers = args[1], *exclude = args[2];
    PyObject *publication = args[3];
    if (!PyBytes_Check(frame)) {
        PyErr_SetString(PyExc_TypeError, "frame must be bytes");
        return NULL;
    }
    if (!PyDict_Check(subscribers)) {
        PyErr_SetString(PyExc_TypeError, "subscribers must be a dict");
        return NULL;
    }
    PyObject *skip = NULL;
    if (exclude != Py_None) {
        skip = PyDict_GetItemWithError(subscribers, exclude); /* borrowed */
        if (skip == NULL && PyErr_Occurred())
            return NULL;
    }
    /* A snapshot: a callback may add or remove subscribers while we write. */
    PyObject *targets = PyDict_Values(subscribers);
    if (targets == NULL)
        return NULL;
    PyObject *slow = PyList_New(0);
    PyObject *failed = PyList_New(0);
    if (slow == NULL || failed == NULL) {
        Py_XDECREF(slow);
        Py_XDECREF(failed);
        Py_DECREF(targets);
        return NULL;
    }
    Py_XINCREF(skip);

    const char *buf = PyBytes_AS_STRING(frame);
    Py_ssize_t len = PyBytes_GET_SIZE(frame);
    Py_ssize_t count = 0;
    Py_ssize_t n = PyList_GET_SIZE(targets);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *target = PyList_GET_ITEM(targets, i);
        if (target == skip)
            continue;
        enum outcome outcome;
        if (PyObject_TypeCheck(target, SinkType))
            outcome = write_sink((SinkObject *)target, frame, buf, len);
        else
            outcome = write_other(target, publication);
        switch (outcome) {
        case WRITTEN:
            count++;
            break;
        case SLOW:
            count++;
            if (PyList_Append(slow, target) < 0)
                PyErr_WriteUnraisable(target); /* out of memory */
            break;
        case SKIPPED:
            break;
        case FAILED:
            record_failure(failed, target);
            break;
        }
    }
    Py_XDECREF(skip);
    Py_DECREF(targets);
    return Py_BuildValue("(nNN)", count, slow, failed);
}

static PyMethodDef fanout_methods[] = {
    {"write_many", (PyCFunction)(void (*)(void))write_many, METH_FASTCALL, write_many_doc},
    {NULL, NULL, 0, NULL},
};

static int
fanout_exec(PyObject *module)
{
    str_write = PyUnicode_InternFromString("write");
    str_publish = PyUnicode_InternFromString("publish");
    str_deliver = PyUnicode_InternFromString("deliver");
    str_is_closing = PyUnicode_InternFromString("is_closing");
    str_get_write_buffer_size = PyUnicode_InternFromString("get_write_buffer_size");
    if (!str_write || !str_publish || !str_deliver || !str_is_closing || !str_get_write_buffer_size)
        return -1;
    SinkType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &Sink_spec, NULL);
    if (SinkType == NULL)
        return -1;
    if (PyModule_AddObjectRef(module, "Sink", (PyObject *)SinkType) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot fanout_slots[] = {
    {Py_mod_exec, fanout_exec},
    {0, NULL},
};

static struct PyModuleDef fanout_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tidings._fanout",
    .m_doc = "Write one frame to many sockets in one call (see write_many).",
    .m_size = 0,
    .m_methods = fanout_methods,
    .m_slots = fanout_slots,
};

PyMODINIT_FUNC
PyInit__fanout(void)
{
    return PyModuleDef_Init(&fanout_module);
}
