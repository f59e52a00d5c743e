{
  "targets": [
    {
      "target_name": "quiesce_freeze",
      "sources": ["quiesce_freeze.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
