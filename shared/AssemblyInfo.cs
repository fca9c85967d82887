// Scratch buffers on the interpreter's paths (stackalloc) are always fully written before they are read.
[module: System.Runtime.CompilerServices.SkipLocalsInit]
