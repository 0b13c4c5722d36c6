"""The llvmlite pieces under gemmlab's Numba kernel (numba_jit): the host's vector width, stack
buffers the accumulators live in, pointers into arrays, and vector FMAs written out for the small
path, where LLVM's loop vectoriser does not reach (see fma_vector).

Numba keys its on-disk cache of numba_jit's functions on numba_jit.py alone: after editing this
file, touch numba_jit.py (or delete its __pycache__) so that the kernels are compiled again.
"""

from __future__ import annotations

import llvmlite.binding as llvm_binding
import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import populate_array

# Numba compiles for the CPU it runs on, so the kernels follow the host's vector registers.
# (NUMBA_CPU_NAME set means code for some other CPU: assume the least.)
try:
    _FEATURES = llvm_binding.get_host_cpu_features() if numba.config.CPU_NAME is None else {}
except RuntimeError:  # the host's features are unknown: assume the least
    _FEATURES = {}
WIDE = bool(_FEATURES.get("avx512f"))  # 32 registers of 64 bytes, and LLVM may use them (see stack_pointer)
VECTOR_BYTES = 64 if WIDE else 32 if _FEATURES.get("avx2") else 16


def _prefer_512_bit_vectors(function) -> None:
    """Let LLVM vectorise this function with 512-bit registers.

    LLVM's default for Intel AVX-512 CPUs is prefer-vector-width=256 (so that code full of short
    vector loops does not lower the clock); the micro-kernel is written for the 32 zmm registers.
    llvmlite's attribute set accepts only names it knows, so the string attribute is added beside
    them; should a later llvmlite refuse it, the kernels still work, with 256-bit vectors."""
    try:
        set.add(function.attributes, '"prefer-vector-width"="512"')
    except Exception:  # pragma: no cover - depends on the llvmlite version
        pass


def stack_pointer(size: int, doc: str):
    """An intrinsic: a pointer to `size` bytes of stack, of the given dtype (in a function that
    may use 512-bit vectors)."""

    @intrinsic
    def pointer(typingctx, dtype):
        elements = size // (dtype.dtype.bitwidth // 8)

        def codegen(context, builder, signature, args):
            if WIDE:
                _prefer_512_bit_vectors(builder.function)
            return cgutils.alloca_once(builder, context.get_value_type(dtype.dtype), size=elements)

        return types.CPointer(dtype.dtype)(dtype), codegen

    pointer.__doc__ = doc
    return pointer


@intrinsic
def resized(typingctx, array, rows, cols):
    """A 2-D array of any layout ("A") on array's data and strides, with shape (rows, cols) (the
    caller vouches for the memory): the small path reads b and its copy through one type."""
    result = types.Array(array.dtype, 2, "A")

    def codegen(context, builder, signature, args):
        src = context.make_array(signature.args[0])(context, builder, args[0])
        dst = context.make_array(result)(context, builder)
        populate_array(dst, data=src.data, shape=[args[1], args[2]], strides=cgutils.unpack_tuple(builder, src.strides),
                       itemsize=src.itemsize, meminfo=src.meminfo, parent=src.parent)
        if context.enable_nrt:  # the result shares array's memory: one more reference to it
            context.nrt.incref(builder, signature.args[0], args[0])
        return dst._getvalue()

    return result(array, types.intp, types.intp), codegen


def _array_at(context, builder, array_type, address, shape, strides):
    """The code for an array of array_type over the memory at `address` (an integer), not owned;
    strides in bytes, or None for contiguous 1-D."""
    data_type = context.get_data_type(array_type.dtype)
    ary = context.make_array(array_type)(context, builder)
    itemsize = context.get_constant(types.intp, context.get_abi_sizeof(data_type))
    populate_array(ary, data=builder.inttoptr(address, data_type.as_pointer()), shape=shape,
                   strides=[itemsize] if strides is None else strides, itemsize=itemsize, meminfo=None)
    return ary._getvalue()


@intrinsic
def view(typingctx, address, rows, cols, stride0, stride1, scalar):
    """The 2-D array of scalar's type at address, with the given shape and byte strides."""
    dtype = scalar.instance_type
    array_type = types.Array(dtype, 2, "A")

    def codegen(context, builder, signature, args):
        address, rows, cols, stride0, stride1, _ = args
        return _array_at(context, builder, array_type, address, [rows, cols], [stride0, stride1])

    return array_type(types.intp, types.intp, types.intp, types.intp, types.intp, scalar), codegen


@intrinsic
def buffer_at(typingctx, address, length, scalar):
    """The contiguous 1-D array of `length` elements of scalar's type at address (0 and 0: empty)."""
    dtype = scalar.instance_type
    array_type = types.Array(dtype, 1, "C")

    def codegen(context, builder, signature, args):
        address, length, _ = args
        return _array_at(context, builder, array_type, address, [length], None)

    return array_type(types.intp, types.intp, scalar), codegen


@intrinsic
def element_pointer(typingctx, array, i, j):
    """A pointer to array[i, j] (no bounds check: the caller guarantees 0 <= i, j < shape)."""

    def codegen(context, builder, signature, args):
        arrty = signature.args[0]
        ary = context.make_array(arrty)(context, builder, args[0])
        return cgutils.get_item_pointer2(
            context, builder, data=ary.data, shape=cgutils.unpack_tuple(builder, ary.shape),
            strides=cgutils.unpack_tuple(builder, ary.strides), layout=arrty.layout,
            inds=[args[1], args[2]], wraparound=False, boundscheck=False,
        )

    return types.CPointer(array.dtype)(array, types.intp, types.intp), codegen


@intrinsic
def offset_pointer(typingctx, array, offset):
    """A pointer to the element `offset` places after the start of a contiguous 1-D array."""

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.gep(ary.data, [args[1]])

    return types.CPointer(array.dtype)(array, types.intp), codegen


@intrinsic
def shift(typingctx, pointer, nbytes):
    """pointer moved by nbytes bytes (either way)."""

    def codegen(context, builder, signature, args):
        raw = builder.bitcast(args[0], ir.IntType(8).as_pointer())
        return builder.bitcast(builder.gep(raw, [args[1]]), args[0].type)

    return pointer(pointer, types.intp), codegen


@intrinsic
def prefetch(typingctx, array, offset):
    """Ask for the cache line of array's element `offset` (a contiguous 1-D array; the element may lie
    past its end: a prefetch never faults) to be brought into L1 for reading."""

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        address = builder.bitcast(builder.gep(ary.data, [args[1]]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        hint = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [address.type, i32, i32, i32]),
                                              "llvm.prefetch.p0")
        builder.call(hint, [address, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])  # read, keep in L1, data
        return context.get_dummy_value()

    return types.none(array, types.intp), codegen


# Vector operations on raw pointers (byte strides), for the small path: Numba counts references to
# every array a function receives or makes (a call to NRT_incref / NRT_decref each, several per
# tile), which cost more than the arithmetic of a small tile. They are written out because LLVM's
# loop vectoriser handles a loop over one vector of elements only when its unroller leaves the
# loop alone, which it does not for short ones (8 float64, or 16 float32 in few rows: unrolled
# first, then left scalar or 128-bit).

def _vector_at(context, builder, pointer_type, pointer, offset):
    """(pointer, type) of the vector register's worth of elements from pointer[offset]."""
    vector = ir.VectorType(context.get_value_type(pointer_type.dtype), VECTOR_BYTES * 8 // pointer_type.dtype.bitwidth)
    return builder.bitcast(builder.gep(pointer, [offset]), vector.as_pointer()), vector


def _fmuladd(builder, vector, bits):
    """LLVM's fmuladd on `vector`: one FMA instruction where the CPU has them, a multiply and an add elsewhere."""
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3),
                                          f"llvm.fmuladd.v{vector.count}f{bits}")


@intrinsic
def fma_vector(typingctx, acc, at, b, a):
    """acc[at:at + W] += a * b[:W] as one vector FMA (W: one vector register of elements)."""

    def codegen(context, builder, signature, args):
        acc_at, vector = _vector_at(context, builder, signature.args[0], args[0], args[1])
        b_at, _ = _vector_at(context, builder, signature.args[2], args[2], context.get_constant(types.intp, 0))
        lanes = ir.Constant(ir.VectorType(ir.IntType(32), vector.count), [0] * vector.count)
        single = builder.insert_element(ir.Constant(vector, ir.Undefined), args[3], ir.Constant(ir.IntType(32), 0))
        splat = builder.shuffle_vector(single, single, lanes)
        result = builder.call(_fmuladd(builder, vector, signature.args[0].dtype.bitwidth), [splat, builder.load(b_at, align=1), builder.load(acc_at, align=1)])
        builder.store(result, acc_at, align=1)
        return context.get_dummy_value()

    return types.none(acc, types.intp, b, acc.dtype), codegen


@intrinsic
def copy_vector(typingctx, dst, at, src, offset):
    """dst[at:at + W] = src[offset:offset + W] as one vector load and store. An element-by-element
    copy between two arrays that might overlap stays scalar (LLVM may not reorder its loads and
    stores): packing a panel of B that way cost numba 8% of a 1024^3 product against Cython's 3%."""

    def codegen(context, builder, signature, args):
        dst_at, _ = _vector_at(context, builder, signature.args[0], args[0], args[1])
        src_at, _ = _vector_at(context, builder, signature.args[2], args[2], args[3])
        builder.store(builder.load(src_at, align=1), dst_at, align=1)
        return context.get_dummy_value()

    return types.none(dst, types.intp, src, types.intp), codegen


@intrinsic
def dot_fmas(typingctx, acc, xs, ys, offset, rows, cols, accumulate):
    """acc vector r * cols + c (+)= xs[r][offset:][:W] * ys[c][offset:][:W] for r < rows and c < cols
    (rows, cols and accumulate literals): rows + cols vector loads, rows * cols FMAs, for a tile of
    dot products (numba_jit's dot-product loop)."""
    if not all(isinstance(x, types.IntegerLiteral) for x in (rows, cols)) or not isinstance(accumulate, types.BooleanLiteral):
        return None  # (typed again with literals: numba.literally in the caller)
    count, n_cols, add = rows.literal_value, cols.literal_value, accumulate.literal_value

    def codegen(context, builder, signature, args):
        acc_p, xs_v, ys_v, off = args[:4]
        pointer_type = signature.args[1].dtype

        def load(pointers, i):
            at, vector = _vector_at(context, builder, pointer_type, builder.extract_value(pointers, i), off)
            return builder.load(at, align=1), vector

        x = [load(xs_v, r)[0] for r in range(count)]
        y = [load(ys_v, c)[0] for c in range(n_cols)]
        vector = x[0].type
        fmuladd = _fmuladd(builder, vector, pointer_type.dtype.bitwidth)
        for r in range(count):
            for c in range(n_cols):
                at, _ = _vector_at(context, builder, signature.args[0], acc_p,
                                   context.get_constant(types.intp, (r * n_cols + c) * vector.count))
                start = builder.load(at, align=1) if add else ir.Constant(vector, None)
                builder.store(builder.call(fmuladd, [x[r], y[c], start]), at, align=1)
        return context.get_dummy_value()

    return types.none(acc, xs, ys, types.intp, rows, cols, accumulate), codegen


@intrinsic
def store_lane_sums(typingctx, sums, acc, rows, cols):
    """sums[v] = the sum of acc's vector v for v < rows * cols (literals): halves added until one
    lane is left, reading acc at fixed offsets only (so that it stays in registers)."""
    if not all(isinstance(x, types.IntegerLiteral) for x in (rows, cols)):
        return None
    count = rows.literal_value * cols.literal_value

    def codegen(context, builder, signature, args):
        sums_p, acc_p = args[:2]
        lanes = VECTOR_BYTES * 8 // signature.args[1].dtype.bitwidth
        for v in range(count):
            at, _ = _vector_at(context, builder, signature.args[1], acc_p, context.get_constant(types.intp, v * lanes))
            x = builder.load(at, align=1)
            width = lanes
            while width > 1:
                width //= 2
                lo, hi = (ir.Constant(ir.VectorType(ir.IntType(32), width), list(range(s, s + width))) for s in (0, width))
                x = builder.fadd(builder.shuffle_vector(x, x, lo), builder.shuffle_vector(x, x, hi))
            total = builder.extract_element(x, ir.Constant(ir.IntType(32), 0))
            builder.store(total, builder.gep(sums_p, [context.get_constant(types.intp, v)]))
        return context.get_dummy_value()

    return types.none(sums, acc, rows, cols), codegen


def vector_zeroer(count: int):
    """An intrinsic: zero `count` vectors from a pointer, as straight-line vector stores (a loop of
    stores, even of whole vectors, becomes a call to memset, after which a tile of accumulators no
    longer lives in registers)."""

    @intrinsic
    def zero(typingctx, acc):
        def codegen(context, builder, signature, args):
            lanes = VECTOR_BYTES * 8 // signature.args[0].dtype.bitwidth
            for v in range(count):
                at, vector = _vector_at(context, builder, signature.args[0], args[0],
                                        context.get_constant(types.intp, v * lanes))
                builder.store(ir.Constant(vector, None), at, align=1)
            return context.get_dummy_value()

        return types.none(acc), codegen

    zero.__doc__ = f"Zero {count} vectors from acc."
    return zero


def _store_or_add(context, builder, dst_type, dst, value, first):
    """dst[:W] = value, or += value unless first: one vector store, or a load, an add and a store."""
    dst_at, _ = _vector_at(context, builder, dst_type, dst, context.get_constant(types.intp, 0))
    with builder.if_else(first) as (then, otherwise):
        with then:
            builder.store(value, dst_at, align=1)
        with otherwise:
            builder.store(builder.fadd(builder.load(dst_at, align=1), value), dst_at, align=1)


@intrinsic
def store_vector(typingctx, dst, acc, at, first):
    """dst[:W] = (or += unless first) acc[at:at + W], in vector operations. (Element by element, a
    tile's write-back went through the stack, a scalar load, add and store per element.)"""

    def codegen(context, builder, signature, args):
        x, _ = _vector_at(context, builder, signature.args[1], args[1], args[2])
        _store_or_add(context, builder, signature.args[0], args[0], builder.load(x, align=1), args[3])
        return context.get_dummy_value()

    return types.none(dst, acc, types.intp, types.boolean), codegen


@intrinsic
def store_vector_sum(typingctx, dst, acc, at, other, first):
    """dst[:W] = (or += unless first) acc[at:at + W] + acc[other:other + W], in vector operations."""

    def codegen(context, builder, signature, args):
        x, _ = _vector_at(context, builder, signature.args[1], args[1], args[2])
        y, _ = _vector_at(context, builder, signature.args[1], args[1], args[3])
        total = builder.fadd(builder.load(x, align=1), builder.load(y, align=1))
        _store_or_add(context, builder, signature.args[0], args[0], total, args[4])
        return context.get_dummy_value()

    return types.none(dst, acc, types.intp, types.intp, types.boolean), codegen


@intrinsic
def set_thread_count(typingctx, n):
    """numba.set_num_threads(n) for code cached on disk (1 <= n <= NUMBA_NUM_THREADS, unchecked).

    Numba's own reaches the threading layer through a ctypes pointer, which makes a function that
    calls it uncacheable; this calls the layer's function by the symbol name Numba gives it when it
    loads the layer (numba.get_num_threads() does), resolved when the code is loaded."""

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [ir.IntType(32)]),
                                            "set_num_threads")
        builder.call(fn, [context.cast(builder, args[0], signature.args[0], types.int32)])
        return context.get_dummy_value()

    return types.none(n), codegen
