using Iced.Intel;

namespace ReVirt.Cpu;

/// <summary>
/// The instruction set's registry: a handler by Iced <see cref="Code"/> and one by <see cref="Mnemonic"/>; the Code's
/// entry wins over its Mnemonic's, a later registration of the same key over an earlier one.
/// Why not two pointer arrays: the registry is made at every start-up, and by Code it has ~4,900 entries. Here an
/// entry is a two-byte index into the list of registered handlers (about 13 KiB of tables instead of 54 KiB of fresh
/// pages the host faults in). It is read when a block is decoded, never per executed instruction.
/// Filled once (by <see cref="Isa"/>'s one-time registration) before it is read; not for concurrent writers.
/// </summary>
internal sealed unsafe class HandlerTable
{
    readonly ushort[] _byCode = new ushort[IcedCounts.Code];
    readonly ushort[] _byMnemonic = new ushort[IcedCounts.Mnemonic];
    /// <summary>Registered handlers in registration order from index 1; index 0 is null (no handler).</summary>
    delegate*<VirtualCpu, ref Instruction, void>[] _handlers = new delegate*<VirtualCpu, ref Instruction, void>[512];
    int _count = 1;

    public void Add(Code c, delegate*<VirtualCpu, ref Instruction, void> h) => _byCode[(int)c] = Slot(h);
    public void Add(Mnemonic m, delegate*<VirtualCpu, ref Instruction, void> h) => _byMnemonic[(int)m] = Slot(h);

    /// <summary>The handler registered for the Code, else for the Mnemonic; null when neither has one.</summary>
    public delegate*<VirtualCpu, ref Instruction, void> Find(Code c, Mnemonic m)
    {
        int k = _byCode[(int)c];
        if (k == 0) k = _byMnemonic[(int)m];
        return _handlers[k];
    }

    /// <summary>True when the Code or the Mnemonic has a handler.</summary>
    public bool Has(Code c, Mnemonic m) => _byCode[(int)c] != 0 || _byMnemonic[(int)m] != 0;

    /// <summary>Appends a handler and returns its index (a handler registered twice takes two entries: registration
    /// runs once, and a search per registration would cost more than the entry).</summary>
    ushort Slot(delegate*<VirtualCpu, ref Instruction, void> h)
    {
        if (h == null) return 0;
        if (_count == _handlers.Length)
        {
            if (_count > ushort.MaxValue) throw new InvalidOperationException("more handler registrations than a table entry can index");
            var grown = new delegate*<VirtualCpu, ref Instruction, void>[_handlers.Length * 2];
            for (int k = 0; k < _count; k++) grown[k] = _handlers[k];
            _handlers = grown;
        }
        _handlers[_count] = h;
        return (ushort)_count++;
    }
}
