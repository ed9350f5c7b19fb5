"""The program bundle on disk: its versioned, hashed store (written atomically), the manifest's schema, the
program's serialisation into manifest sections and payloads and back, reading a bundle's executable parts,
and the summaries ``admc inspect`` prints."""
