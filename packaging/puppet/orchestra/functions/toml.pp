# The TOML spelling of a value: a string, number, boolean, array or inline table (hash),
# which is all Orchestra's config files hold. Strings become basic strings with "\" and
# '"' escaped; control characters are refused rather than escaped, as no setting, name
# or pattern of Orchestra's has a use for one.
function orchestra::toml(Variant[String, Numeric, Boolean, Array, Hash] $value) >> String {
  case $value {
    String: {
      if $value =~ /[\x00-\x1f\x7f]/ {
        fail("orchestra::toml: control character in ${value.regsubst(/[\x00-\x1f\x7f]/, '?', 'G')}")
      }
      $escaped = $value.regsubst(/\\/, '\\\\\\\\', 'G').regsubst(/"/, '\\\\"', 'G')
      "\"${escaped}\""
    }
    Array: {
      "[${value.map |$item| { orchestra::toml($item) }.join(', ')}]"
    }
    Hash: {
      $pairs = $value.map |$key, $item| { "${orchestra::toml_key($key)} = ${orchestra::toml($item)}" }
      "{ ${pairs.join(', ')} }"
    }
    default: {
      # %p: Ruby's shortest exact spelling (0.5, 1.0e-07), which TOML reads back as is.
      String($value, '%p')
    }
  }
}
