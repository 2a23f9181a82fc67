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

    # Outlook (classic) "Export to a file > Comma Separated Values": cp1252, every field quoted,
    # English headers, numbered repeats ("Business Phone 2", "E-mail 2 Address"), an address
    # over two lines; the last contact is a company with no person's name
    outlook_header = (
        "First Name,Middle Name,Last Name,Title,Suffix,Initials,Web Page,Gender,Birthday,Notes,"
        "E-mail Address,E-mail 2 Address,E-mail Display Name,Primary Phone,Home Phone,Mobile Phone,Pager,"
        "Business Fax,Business Street,Business City,Business Postal Code,Company Main Phone,Business Phone,"
        "Business Phone 2,Assistant's Phone,Company,Job Title,Department,Categories,Sensitivity"
    ).split(",")
    outlook_rows = [
        {
            "First Name": "Jürg",
            "Last Name": "Müller",
            "Web Page": "https://crm.example.com/c/7",
            "Gender": "Unspecified",
            "Birthday": "0/0/00",
            "E-mail Address": "jm@mueller.ch",
            "E-mail Display Name": "Jürg Müller (jm@mueller.ch)",
            "Mobile Phone": "+41 (79) 111 22 33",
            "Business Street": "Bahnhofstrasse 1\r\nPostfach",
            "Business City": "Zürich",
            "Business Phone": "+41 (44) 111 22 33",
            "Company": "Müller & Söhne AG",
            "Sensitivity": "Normal",
        },
        {
            "Web Page": "https://baer-cafe.example.ch",
            "Gender": "Unspecified",
            "Birthday": "0/0/00",
            "Company Main Phone": "+41 (31) 222 33 44",
            "Company": "Bär Café",
            "Categories": "Lieferant",
            "Sensitivity": "Normal",
        },
    ]
    lines = [",".join(f'"{name}"' for name in outlook_header)]
    for row in outlook_rows:
        lines.append(",".join(f'"{row.get(name, "")}"' for name in outlook_header))
    (HERE / "outlook.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode("cp1252"))
    # Google Contacts "Export > Google CSV": UTF-8 without BOM, "Phone 1 - Value" with two
    # numbers of one label joined by " ::: ", and a company with no person's name
    (HERE / "google.csv").write_text(
        "First Name,Middle Name,Last Name,Phonetic First Name,Nickname,File As,Organization Name,"
        "Organization Title,Birthday,Notes,Labels,E-mail 1 - Label,E-mail 1 - Value,Phone 1 - Label,"
        "Phone 1 - Value,Phone 2 - Label,Phone 2 - Value,Website 1 - Label,Website 1 - Value\n"
        "Inès,,Favre,,,,Favre Avocats,Partner,,,* myContacts,* Work,ines@favre.ch,Mobile,"
        "+41 79 333 44 55 ::: +41 78 333 44 55,Work,+41 22 333 44 55,,\n"
        ",,,,,,Roux SA,,,,* myContacts,,,Work,+33 1 42 68 53 00,,,Homepage,https://roux.example.fr\n",
        encoding="utf-8",
    )
    # Excel "CSV UTF-8" with semicolons: the same customer twice (first with the office and the
    # mobile number, then again with the office number and an e-mail), four rows, three contacts
    (HERE / "excel-duplicates.csv").write_bytes(
        "\ufeffName;Telefon;Mobile;E-Mail;Ort\n"
        "Anna Muster;044 123 45 67;079 123 45 67;;Zug\n"
        "Beat Keller;044 765 43 21;;beat@keller.ch;Baar\n"
        "Anna Muster;044 123 45 67;;anna@muster.ch;\n"
        "Carla Rossi;076 987 65 43;;;Cham\n".encode()
    )

    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["Name", "Mobile", "Company", "Website"])
    sheet.append(["Carla Rossi", "076 987 65 43", "Rossi Import", "https://rossi.example.com"])
    sheet.append(["Daniel Weber", 449876543, "Weber & Co", None])  # typed as a number: Excel dropped the 0
    workbook.save(HERE / "excel.xlsx")


if __name__ == "__main__":
    main()
