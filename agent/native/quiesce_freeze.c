/*
 * FIFREEZE / FITHAW from inside the agent process, so a thaw costs one
 * open + ioctl + close per mount rather than a fork and exec of fsfreeze(8).
 *
 *   freeze(path)   -> 0 when frozen, errno (> 0) when FIFREEZE failed,
 *                     -errno (< 0) when the mount could not be opened
 *   thaw(path)     -> how many FITHAW calls succeeded before the first failure
 *                     (>= 0), -errno (< 0) when the mount could not be opened
 *   strerror(n)    -> the C library's text for errno n
 *
 * Calls are synchronous like the reference agent's: nothing else runs in the
 * agent while a filesystem is being frozen.
 */
#include <node_api.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"freeze", NULL, js_freeze, NULL, NULL, NULL, napi_enumerable, NULL},
      {"thaw", NULL, js_thaw, NULL, NULL, NULL, napi_enumerable, NULL},
      {"strerror", NULL, js_strerror, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
