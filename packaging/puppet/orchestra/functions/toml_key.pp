# A TOML key: bare when it can be ("max_concurrent", "web"), quoted otherwise
# ("ci.example.com" as one key, not a dotted path).
function orchestra::toml_key(String[1] $key) >> String {
  $key ? {
    /\A[A-Za-z0-9_-]+\z/ => $key,
    default              => orchestra::toml($key),
  }
}
