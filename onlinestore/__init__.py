"""The online-store codec: Feast's Redis layout, RESP (plain and compiled bulk), the writer, the fast
reader and the Spark writer. Above core, below everything that publishes or reads online features."""
