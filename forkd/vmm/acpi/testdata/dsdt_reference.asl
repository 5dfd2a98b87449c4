/*
 * The DSDT forkd-vmm builds for COM1, rng, vsock and net (slots 0..2 in
 * forkd/vmm/arch/x86_64/layout.h) with the VM generation ID at 0xEF000 and
 * the GED on GSI 10, written as ASL. acpi_test.cc compiles this with iasl at
 * test time and compares the AML body byte for byte with acpi::BuildDsdt.
 * iasl needs -f: it insists that an 8-character _HID end in hex digits, but
 * Linux's vmgenid driver matches the literal "VMGENCTR".
 */
DefinitionBlock ("dsdt.aml", "DSDT", 2, "FORKD ", "FORKDVM ", 1)
{
    Scope (_SB)
    {
        Device (COM1)
        {
            Name (_HID, EisaId ("PNP0501"))
            Name (_UID, One)
            Name (_CRS, ResourceTemplate ()
            {
                IO (Decode16, 0x03F8, 0x03F8, 0x08, 0x08)
                IRQNoFlags () { 4 }
            })
        }
        Device (V000)
        {
            Name (_HID, "LNRO0005")
            Name (_UID, Zero)
            Name (_CRS, ResourceTemplate ()
            {
                Memory32Fixed (ReadWrite, 0xD0000000, 0x00001000)
                Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { 5 }
            })
        }
        Device (V001)
        {
            Name (_HID, "LNRO0005")
            Name (_UID, One)
            Name (_CRS, ResourceTemplate ()
            {
                Memory32Fixed (ReadWrite, 0xD0001000, 0x00001000)
                Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { 6 }
            })
        }
        Device (V002)
        {
            Name (_HID, "LNRO0005")
            Name (_UID, 2)
            Name (_CRS, ResourceTemplate ()
            {
                Memory32Fixed (ReadWrite, 0xD0002000, 0x00001000)
                Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { 7 }
            })
        }
        Device (VGEN)
        {
            Name (_HID, "VMGENCTR")
            Name (_CID, "VM_Gen_Counter")
            Name (_DDN, "VM_Gen_Counter")
            Method (ADDR, 0, NotSerialized)
            {
                Return (Package (0x02) { 0x000EF000, Zero })
            }
        }
        Device (GED0)
        {
            Name (_HID, "ACPI0013")
            Name (_UID, Zero)
            Name (_CRS, ResourceTemplate ()
            {
                Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { 10 }
            })
            Method (_EVT, 1, Serialized)
            {
                If ((Arg0 == 10))
                {
                    Notify (VGEN, 0x80)
                }
            }
        }
    }
}
