/* A plugin ffv_dlopen finds only through its own RUNPATH. */
int ffv_plugin_answer(void) { return 42; }
