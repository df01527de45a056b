// Anchor of the precompiled LibTorch header for executables (cmake/MmintentCompiler.cmake).
int main() { return 0; }
