// A dense data table: columns declare their header, cell renderer and alignment (numbers right, ids monospace).
import { Fragment, type ReactNode } from "react";

export interface Column<T> {
  key: string;
  header: ReactNode;
  render: (row: T) => ReactNode;
  align?: "left" | "right" | "center";
  mono?: boolean;
  className?: string;
  title?: string;
}

export function Table<T>({
  columns,
  rows,
  rowKey,
  testId,
  rowTestId,
  rowProps,
  onRowClick,
  expanded,
  renderExpanded,
  empty = "Nothing yet.",
  className,
}: {
  columns: Column<T>[];
  rows: T[];
  rowKey: (row: T) => string | number;
  testId?: string;
  rowTestId?: string;
  rowProps?: (row: T) => Record<string, string | number | undefined>;
  onRowClick?: (row: T) => void;
  expanded?: (row: T) => boolean;
  renderExpanded?: (row: T) => ReactNode;
  empty?: ReactNode;
  className?: string;
}) {
  const cellClass = (column: Column<T>, head = false) =>
    [
      column.align === "right" ? "num" : column.align === "center" ? "center" : "",
      column.mono && !head ? "mono" : "",
      column.className ?? "",
    ]
      .filter(Boolean)
      .join(" ") || undefined;
  return (
    <div className="table-wrap">
      <table className={`table ${className ?? ""}`} data-testid={testId}>
        <thead>
          <tr>
            {columns.map((column) => (
              <th key={column.key} className={cellClass(column, true)} title={column.title} scope="col">
                {column.header}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.length === 0 && (
            <tr>
              <td colSpan={columns.length} className="empty-cell">
                {empty}
              </td>
            </tr>
          )}
          {rows.map((row) => {
            const key = rowKey(row);
            const open = expanded?.(row) ?? false;
            return (
              <Fragment key={key}>
                <tr
                  data-testid={rowTestId}
                  {...(rowProps?.(row) ?? {})}
                  className={`${onRowClick ? "clickable" : ""} ${open ? "open" : ""}`}
                  onClick={onRowClick ? () => onRowClick(row) : undefined}
                  onKeyDown={
                    onRowClick
                      ? (event) => {
                          if (event.key === "Enter" || event.key === " ") {
                            event.preventDefault();
                            onRowClick(row);
                          }
                        }
                      : undefined
                  }
                  tabIndex={onRowClick ? 0 : undefined}
                  aria-expanded={renderExpanded ? open : undefined}
                >
                  {columns.map((column) => (
                    <td key={column.key} className={cellClass(column)}>
                      {column.render(row)}
                    </td>
                  ))}
                </tr>
                {open && renderExpanded && (
                  <tr className="details-row">
                    <td colSpan={columns.length}>{renderExpanded(row)}</td>
                  </tr>
                )}
              </Fragment>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}
