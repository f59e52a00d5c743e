/*
 * FIFREEZE / FITHAW from inside the agent process, so a thaw costs one
 * open + ioctl + close per mount rather than a fork and exec of fsfreeze(8).
 *
 *   freeze(path)   -> 0 when frozen, errno (> 0) when FIFREEZE failed,
 *                     -errno (< 0) when the mount could not be opened
 *   thaw(path)     -> how many FITHAW calls succeeded before the first failure
 *                     (>= 0), -errno (< 0) when the mount could not be opened
 *   strerror(n)    -> the C library's text for errno n
 *   changed(fd)    -> 1 when the kernel flags a change on an open
 *                     /proc/self/mountinfo (POLLPRI/POLLERR: a mount or unmount
 *                     since it was opened or last asked), 0 when not, -errno
 *   read(fd, buf)  -> bytes read into the Buffer (>= 0), -errno (EAGAIN included)
 *   write(fd, buf, off, len)
 *                  -> bytes of buf[off, off + len) written (>= 0), -errno
 *   watch(fd, cb)  -> a readiness watch on a descriptor (libuv's poll handle):
 *                     arm(w) waits once for it to be readable, then calls
 *                     cb(status) on the event loop (status < 0: a libuv error);
 *                     unwatch(w) ends it
 *
 * Freeze and thaw are synchronous like the reference agent's: nothing else
 * runs in the agent while a filesystem is being frozen. The watch exists for
 * the serial transports: Node has no readiness events for a character device
 * that is not a tty, and polling it on a timer puts the timer's period in
 * front of every request, the thaw included.
 */
/* pipe2() */
#define _GNU_SOURCE
#include <node_api.h>
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* A filesystem frozen by several holders needs one FITHAW each; stop somewhere. */
#define MAX_THAWS 1024

static int get_path(napi_env env, napi_callback_info info, char *buf, size_t len) {
  size_t argc = 1;
  napi_value argv[1];
  size_t copied = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) {
    napi_throw_type_error(env, NULL, "a path is required");
    return -1;
  }
  if (napi_get_value_string_utf8(env, argv[0], buf, len, &copied) != napi_ok) {
    napi_throw_type_error(env, NULL, "the path must be a string");
    return -1;
  }
  if (copied >= len - 1) {
    napi_throw_range_error(env, NULL, "the path is too long");
    return -1;
  }
  return 0;
}

static napi_value int_value(napi_env env, int n) {
  napi_value v;
  napi_create_int32(env, n, &v);
  return v;
}

static int open_mount(const char *path) {
  int fd;
  do {
    fd = open(path, O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

static napi_value js_freeze(napi_env env, napi_callback_info info) {
  char path[PATH_MAX + 1];
  int fd, rc = 0;
  if (get_path(env, info, path, sizeof path) < 0) return NULL;
  fd = open_mount(path);
  if (fd < 0) return int_value(env, -errno);
  if (ioctl(fd, FIFREEZE, 0) == -1) rc = errno;
  close(fd);
  return int_value(env, rc);
}

static napi_value js_thaw(napi_env env, napi_callback_info info) {
  char path[PATH_MAX + 1];
  int fd, n = 0;
  if (get_path(env, info, path, sizeof path) < 0) return NULL;
  fd = open_mount(path);
  if (fd < 0) return int_value(env, -errno);
  while (n < MAX_THAWS && ioctl(fd, FITHAW, 0) == 0) n++;
  close(fd);
  return int_value(env, n);
}

static napi_value js_strerror(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  int32_t n = 0;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_int32(env, argv[0], &n) != napi_ok) {
    napi_throw_type_error(env, NULL, "an errno number is required");
    return NULL;
  }
  napi_create_string_utf8(env, strerror(n), NAPI_AUTO_LENGTH, &out);
  return out;
}

static napi_value js_changed(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  struct pollfd p;
  int rc;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "a descriptor is required");
    return NULL;
  }
  p.fd = fd;
  p.events = POLLPRI;
  p.revents = 0;
  do {
    rc = poll(&p, 1, 0);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) return int_value(env, -errno);
  if (p.revents & POLLNVAL) return int_value(env, -EBADF);
  return int_value(env, (p.revents & (POLLPRI | POLLERR)) ? 1 : 0);
}

/*
 * read/write for the non-blocking serial device, without an exception for
 * EAGAIN (fs.readSync throws one, and under emulation building it costs
 * more than the read). read(fd, buf) fills buf; write(fd, buf, off, len)
 * writes buf[off, off + len).
 */
static napi_value device_io(napi_env env, napi_callback_info info, int writing) {
  size_t argc = 4, len;
  napi_value argv[4];
  int32_t fd, off = 0, count;
  char *data;
  ssize_t n;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < (writing ? 4u : 2u) || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_buffer_info(env, argv[1], (void **)&data, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "a descriptor and a Buffer are required");
    return NULL;
  }
  count = (int32_t)(len > INT32_MAX ? INT32_MAX : len);
  if (writing && (napi_get_value_int32(env, argv[2], &off) != napi_ok ||
                  napi_get_value_int32(env, argv[3], &count) != napi_ok || off < 0 || count < 0 ||
                  (size_t)off + (size_t)count > len)) {
    napi_throw_range_error(env, NULL, "offset and length must lie within the Buffer");
    return NULL;
  }
  do {
    n = writing ? write(fd, data + off, (size_t)count) : read(fd, data, (size_t)count);
  } while (n < 0 && errno == EINTR);
  return int_value(env, n < 0 ? -errno : (int)n);
}

static napi_value js_read(napi_env env, napi_callback_info info) { return device_io(env, info, 0); }

static napi_value js_write(napi_env env, napi_callback_info info) { return device_io(env, info, 1); }

/*
 * One readiness watch: a libuv poll handle armed once per wait. Two owners
 * keep it: the handle until libuv has closed it, and the JS external until it
 * is collected; the memory goes with the last.
 */
typedef struct {
  uv_poll_t handle;
  napi_env env;
  napi_ref callback;
  napi_async_context context;
  int closed;
  int owners;
} watch_t;

static void release(watch_t *w) {
  if (--w->owners == 0) free(w);
}

static void watch_closed(uv_handle_t *h) { release(h->data); }

/* Ends the poll handle once: unwatch(), or the external collected without one. */
static void close_watch(watch_t *w) {
  if (w->closed) return;
  w->closed = 1;
  uv_close((uv_handle_t *)&w->handle, watch_closed);
}

static void watch_finalize(napi_env env, void *data, void *hint) {
  watch_t *w = data;
  (void)env;
  (void)hint;
  close_watch(w);
  release(w);
}

static void on_readable(uv_poll_t *h, int status, int events) {
  watch_t *w = h->data;
  napi_handle_scope scope;
  napi_value cb, recv, arg;
  (void)events;
  /* One event per arm(): a hang-up stays readable, and the caller decides when to wait again. */
  uv_poll_stop(h);
  napi_open_handle_scope(w->env, &scope);
  if (w->callback != NULL && napi_get_reference_value(w->env, w->callback, &cb) == napi_ok && cb != NULL) {
    /* make_callback wants an object as the receiver. */
    napi_get_global(w->env, &recv);
    napi_create_int32(w->env, status, &arg);
    if (napi_make_callback(w->env, w->context, recv, cb, 1, &arg, NULL) == napi_pending_exception) {
      /* Nothing up the stack would see it: report it as uncaught, as Node does for its own callbacks. */
      napi_value err;
      napi_get_and_clear_last_exception(w->env, &err);
      napi_fatal_exception(w->env, err);
    }
  }
  napi_close_handle_scope(w->env, scope);
}

static watch_t *get_watch(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *data = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_external(env, argv[0], &data) != napi_ok) {
    napi_throw_type_error(env, NULL, "a watch is required");
    return NULL;
  }
  return data;
}

static napi_value js_watch(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], name, out;
  int32_t fd;
  uv_loop_t *loop;
  watch_t *w;
  int rc;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "a descriptor and a callback are required");
    return NULL;
  }
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    napi_throw_error(env, NULL, "no event loop");
    return NULL;
  }
  w = calloc(1, sizeof *w);
  if (w == NULL) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  rc = uv_poll_init(loop, &w->handle, fd);
  if (rc != 0) {
    free(w);
    napi_throw_error(env, uv_err_name(rc), uv_strerror(rc));
    return NULL;
  }
  w->handle.data = w;
  w->env = env;
  w->owners = 2;
  napi_create_reference(env, argv[1], 1, &w->callback);
  napi_create_string_utf8(env, "quiesce-agent:watch", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &w->context);
  napi_create_external(env, w, watch_finalize, NULL, &out);
  return out;
}

static napi_value js_arm(napi_env env, napi_callback_info info) {
  watch_t *w = get_watch(env, info);
  int rc;
  if (w == NULL) return NULL;
  if (w->closed) {
    napi_throw_error(env, NULL, "the watch has ended");
    return NULL;
  }
  rc = uv_poll_start(&w->handle, UV_READABLE, on_readable);
  if (rc != 0) {
    napi_throw_error(env, uv_err_name(rc), uv_strerror(rc));
    return NULL;
  }
  return NULL;
}

static napi_value js_unwatch(napi_env env, napi_callback_info info) {
  watch_t *w = get_watch(env, info);
  if (w == NULL || w->closed) return NULL;
  napi_delete_reference(env, w->callback);
  w->callback = NULL;
  napi_async_destroy(env, w->context);
  close_watch(w);
  return NULL;
}

/*
 * FITRIM can take minutes on a large filesystem: it runs on the thread pool so
 * the agent's loop (child reaping, exec output, timers) goes on meanwhile.
 */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char path[PATH_MAX + 1];
  uint64_t minlen;
  uint64_t len_out;
  uint64_t minlen_out;
  int rc;
} trim_t;

static void trim_execute(napi_env env, void *data) {
  trim_t *t = data;
  struct fstrim_range r;
  int fd;
  (void)env;
  fd = open_mount(t->path);
  if (fd < 0) {
    t->rc = -errno;
    return;
  }
  r.start = 0;
  r.len = UINT64_MAX;
  r.minlen = t->minlen;
  if (ioctl(fd, FITRIM, &r) == -1) {
    t->rc = errno;
  } else {
    t->rc = 0;
    t->len_out = r.len;
    t->minlen_out = r.minlen;
  }
  close(fd);
}

static void trim_complete(napi_env env, napi_status status, void *data) {
  trim_t *t = data;
  napi_value out, v;
  napi_create_array_with_length(env, 3, &out);
  napi_create_int32(env, status == napi_ok ? t->rc : -ECANCELED, &v);
  napi_set_element(env, out, 0, v);
  napi_create_bigint_uint64(env, t->len_out, &v);
  napi_set_element(env, out, 1, v);
  napi_create_bigint_uint64(env, t->minlen_out, &v);
  napi_set_element(env, out, 2, v);
  napi_resolve_deferred(env, t->deferred, out);
  napi_delete_async_work(env, t->work);
  free(t);
}

static napi_value js_fitrim(napi_env env, napi_callback_info info) {
  size_t argc = 2, copied = 0;
  napi_value argv[2], promise, name;
  bool lossless;
  trim_t *t;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2) {
    napi_throw_type_error(env, NULL, "a path and a minimum length are required");
    return NULL;
  }
  t = calloc(1, sizeof *t);
  if (t == NULL) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  if (napi_get_value_string_utf8(env, argv[0], t->path, sizeof t->path, &copied) != napi_ok) {
    free(t);
    napi_throw_type_error(env, NULL, "the path must be a string");
    return NULL;
  }
  if (copied >= sizeof t->path - 1) {
    free(t);
    napi_throw_range_error(env, NULL, "the path is too long");
    return NULL;
  }
  /* A negative minimum wraps like the reference's int64 -> u64 assignment. */
  if (napi_get_value_bigint_uint64(env, argv[1], &t->minlen, &lossless) != napi_ok) {
    free(t);
    napi_throw_type_error(env, NULL, "the minimum length must be a BigInt");
    return NULL;
  }
  napi_create_promise(env, &t->deferred, &promise);
  napi_create_string_utf8(env, "quiesce-agent:fitrim", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, trim_execute, trim_complete, t, &t->work);
  napi_queue_async_work(env, t->work);
  return promise;
}

static napi_value js_pipe(napi_env env, napi_callback_info info) {
  int fds[2];
  napi_value out, v;
  (void)info;
  if (pipe2(fds, O_CLOEXEC) == -1) return int_value(env, -errno);
  napi_create_array_with_length(env, 2, &out);
  napi_create_int32(env, fds[0], &v);
  napi_set_element(env, out, 0, v);
  napi_create_int32(env, fds[1], &v);
  napi_set_element(env, out, 1, v);
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"freeze", NULL, js_freeze, NULL, NULL, NULL, napi_enumerable, NULL},
      {"thaw", NULL, js_thaw, NULL, NULL, NULL, napi_enumerable, NULL},
      {"strerror", NULL, js_strerror, NULL, NULL, NULL, napi_enumerable, NULL},
      {"changed", NULL, js_changed, NULL, NULL, NULL, napi_enumerable, NULL},
      {"read", NULL, js_read, NULL, NULL, NULL, napi_enumerable, NULL},
      {"write", NULL, js_write, NULL, NULL, NULL, napi_enumerable, NULL},
      {"watch", NULL, js_watch, NULL, NULL, NULL, napi_enumerable, NULL},
      {"arm", NULL, js_arm, NULL, NULL, NULL, napi_enumerable, NULL},
      {"unwatch", NULL, js_unwatch, NULL, NULL, NULL, napi_enumerable, NULL},
      {"pipe", NULL, js_pipe, NULL, NULL, NULL, napi_enumerable, NULL},
      {"fitrim", NULL, js_fitrim, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
