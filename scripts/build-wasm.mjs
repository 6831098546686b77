// placeholder replaced by the wasm helper
