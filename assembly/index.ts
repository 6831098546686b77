// The wasm module's entry: only re-exports. src/wasm.ts is the one place on
// the JS side that knows these names.
export { layoutDescribe } from "./layout";
export { crc32 } from "./crc32";
export {
  tableInit, tableClear, tableLookup, tableSet, tableRemove, tableLookupMany, tableSetMany, tablePrepareLoad,
  tableVerify,
} from "./hashtable";
