"""Writes the real-world contact files in this folder (run once; the files are checked in).

python tests/data/make_contacts.py
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    # Excel "CSV UTF-8" in a German locale: semicolons and a BOM, an external id column
    (HERE / "excel-semicolon-bom.csv").write_bytes(
        "\ufeffname;phone;company;email;url;kundennummer\n"
        "Anna Muster;079 123 45 67;Muster AG;anna@muster.ch;https://crm.example.com/c/1;K-1001\n"
        "Beat Keller;+41 (0)44 765 43 21;Keller Treuhand;;;K-1002\n".encode()
    )
    # Notepad / old Excel "CSV" on Windows: cp1252 with umlauts, German headers
    (HERE / "german-cp1252.csv").write_bytes(
        "Name;Telefon;Firma;E-Mail\n"
        "Jürg Müller;044 111 22 33;Müller & Söhne AG;jm@mueller.ch\n"
        "Zoë Bär;031 222 33 44;Bär Café;\n".encode("cp1252")
    )
    # Excel "Unicode text": UTF-16 with BOM, tab-separated, French headers, first and last name
    (HERE / "french-utf16-tab.txt").write_bytes(
        "Prénom\tNom\tTéléphone\tSociété\tCourriel\n"
        "Inès\tFavre\t022 333 44 55\tFavre Avocats\tines@favre.ch\n"
        "Émile\tRoux\t+33 1 42 68 53 00\tRoux SA\t\n".encode("utf-16")
    )
    # a CRM export with two phone columns (office and Natel) and first/last name columns
    (HERE / "two-phones.csv").write_text(
        "Vorname,Nachname,Tel. Geschäft,Natel,Firma\nHans,Huber,041 740 35 36,079 555 66 77,Huber Holz\n"
    )
    # ten rows, a stray quote in row 3 that would swallow the rest
    rows = [f"Person {n},079 100 00 {n:02d},Firma {n}" for n in range(1, 11)]
    rows[2] = 'Person 3,079 100 00 03,"Firma 3 - the quote is never closed'
    (HERE / "stray-quote.csv").write_text("name,phone,company\n" + "\n".join(rows) + "\n")

    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["Name", "Mobile", "Company", "Website"])
    sheet.append(["Carla Rossi", "076 987 65 43", "Rossi Import", "https://rossi.example.com"])
    sheet.append(["Daniel Weber", 449876543, "Weber & Co", None])  # typed as a number: Excel dropped the 0
    workbook.save(HERE / "excel.xlsx")


if __name__ == "__main__":
    main()
